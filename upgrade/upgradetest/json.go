package upgradetest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/geminidb-patch-bot/geminidb-patch-bot/upgrade"
)

// idSuffix mimics the engine suffix of real GeminiDB instance IDs.
var idSuffix = map[string]string{"cassandra": "in06", "mongodb": "in02", "influxdb": "in13", "redis": "in12"}

// NewInstance returns a healthy, patchable instance of engine with a fresh
// ID of the real shape, three normal nodes, version "3.11" and no
// maintenance window (so plans never skip it for the time of day).
func NewInstance(name, engine string) upgrade.Instance {
	id := randomHex(16)
	suffix, ok := idSuffix[strings.ToLower(engine)]
	if !ok {
		suffix = "in99"
	}
	in := upgrade.Instance{
		ID:             id + suffix,
		Name:           name,
		Status:         "normal",
		Engine:         strings.ToLower(engine),
		Version:        "3.11",
		WholeVersion:   "3.11.3.2",
		PatchAvailable: true,
		Mode:           "Cluster",
	}
	for i := 1; i <= 3; i++ {
		in.Nodes = append(in.Nodes, upgrade.Node{
			ID:     fmt.Sprintf("%sno%02d", randomHex(16), i),
			Name:   fmt.Sprintf("%s_node_%d", name, i),
			Status: "normal",
		})
	}
	return in
}

// InstanceJSON renders inst the way GET /v3/{project_id}/instances does,
// including fields the client ignores and the quirks it must tolerate:
// pay_mode and port as numbers, sizes as strings, nodes under groups[].
func InstanceJSON(inst upgrade.Instance) map[string]any {
	nodes := make([]map[string]any, 0, len(inst.Nodes))
	for i, n := range inst.Nodes {
		nodes = append(nodes, map[string]any{
			"id":                n.ID,
			"name":              n.Name,
			"status":            n.Status,
			"role":              "",
			"subnet_id":         "5f3a0b2b-5c1e-4f0a-9d3e-8f1b2c3d4e5f",
			"private_ip":        fmt.Sprintf("192.168.0.%d", 10+i),
			"public_ip":         "",
			"spec_code":         "geminidb." + inst.Engine + ".xlarge.4",
			"availability_zone": "eu-de-01",
			"support_reduce":    true,
		})
	}
	actions := inst.Actions
	if actions == nil {
		actions = []string{}
	}
	mode := inst.Mode
	if mode == "" {
		mode = "Cluster"
	}
	return map[string]any{
		"id":     inst.ID,
		"name":   inst.Name,
		"status": inst.Status,
		"port":   8635,
		"mode":   mode,
		"region": "eu-de",
		"datastore": map[string]any{
			"type":            inst.Engine,
			"version":         inst.Version,
			"storage_engine":  "rocksDB",
			"patch_available": inst.PatchAvailable,
			"whole_version":   inst.WholeVersion,
		},
		"engine":            "rocksDB",
		"created":           "2023-09-01T08:00:00",
		"updated":           "2023-09-12T06:44:01",
		"db_user_name":      "rwuser",
		"vpc_id":            "0b0f4c1d-7e2a-4b9e-9d2f-6a1e3c5b7d90",
		"subnet_id":         "5f3a0b2b-5c1e-4f0a-9d3e-8f1b2c3d4e5f",
		"security_group_id": "2f1e0d3c-4b5a-6978-8a9b-0c1d2e3f4a5b",
		"backup_strategy": map[string]any{
			"start_time": "19:00-20:00",
			"keep_days":  7,
		},
		"pay_mode":           0,
		"maintenance_window": inst.MaintenanceWindow,
		"groups": []map[string]any{{
			"id":     randomHex(16) + "gr06",
			"status": "normal",
			"volume": map[string]any{"size": "100", "used": "0.003"},
			"nodes":  nodes,
		}},
		"enterprise_project_id": "0",
		"time_zone":             inst.TimeZone,
		"actions":               actions,
		"lb_ip_address":         "",
		"lb_port":               "",
		"dedicated_resource_id": "",
		"disk_encryption_id":    "",
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// uuid returns a random UUID-shaped string, like the API's job IDs.
func uuid() string {
	h := randomHex(16)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
