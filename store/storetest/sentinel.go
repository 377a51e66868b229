package storetest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// SentinelSet is a Redis primary, one replica of it and three Sentinels
// watching them, all on 127.0.0.1, started by StartSentinelSet.
type SentinelSet struct {
	// Master is the name the Sentinels monitor.
	Master string
	// Primary and Replica are the data nodes' addresses as started.
	Primary, Replica string
	// Sentinels are the Sentinels' addresses.
	Sentinels []string
	// Password is the data nodes' password; SentinelPassword the
	// Sentinels' own. Either may be empty.
	Password, SentinelPassword string

	primary *server
}

// SentinelOptions tune StartSentinelSet.
type SentinelOptions struct {
	// Password, when set, is required by the primary and the replica.
	Password string
	// SentinelPassword, when set, is required by the Sentinels.
	SentinelPassword string
}

// server is one redis-server process of a test.
type server struct {
	addr   string
	cmd    *exec.Cmd
	out    *syncBuffer
	exited chan struct{}
}

// StartSentinelSet starts a primary, a replica of it and three Sentinels
// (quorum 2, a node is down after 1 s) on free 127.0.0.1 ports, waits until
// the replica is in sync and every Sentinel knows the replica and the other
// Sentinels, and stops them all at cleanup. Without redis-server the test
// is skipped (Debian's redis-server runs as a Sentinel with --sentinel;
// redis-sentinel is the same binary).
func StartSentinelSet(t testing.TB, opts SentinelOptions) *SentinelSet {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server not installed; .ci/run installs redis-server and redis-sentinel")
	}
	set := &SentinelSet{Master: "mymaster", Password: opts.Password, SentinelPassword: opts.SentinelPassword}
	auth := []string{}
	if opts.Password != "" {
		auth = []string{"--requirepass", opts.Password, "--masterauth", opts.Password}
	}
	set.primary = startServer(t, bin, "primary", auth)
	set.Primary = set.primary.addr
	host, port, _ := net.SplitHostPort(set.Primary)
	replica := startServer(t, bin, "replica", append([]string{"--replicaof", host, port}, auth...))
	set.Replica = replica.addr
	waitFor(t, 20*time.Second, "the replica to sync with the primary", func() (bool, string) {
		info := command(replica.addr, opts.Password, "INFO", "replication")
		return strings.Contains(info, "master_link_status:up"), info
	})

	for i := range 3 {
		dir := t.TempDir()
		conf := []string{
			"bind 127.0.0.1",
			"port 0", // replaced below
			"dir " + dir,
			fmt.Sprintf("sentinel monitor %s %s %s 2", set.Master, host, port),
			"sentinel down-after-milliseconds " + set.Master + " 1000",
			"sentinel failover-timeout " + set.Master + " 10000",
			"sentinel parallel-syncs " + set.Master + " 1",
		}
		if opts.Password != "" {
			conf = append(conf, "sentinel auth-pass "+set.Master+" "+opts.Password)
		}
		if opts.SentinelPassword != "" {
			conf = append(conf, "requirepass "+opts.SentinelPassword, "sentinel sentinel-pass "+opts.SentinelPassword)
		}
		s := startSentinel(t, bin, fmt.Sprintf("sentinel-%d", i+1), dir, conf)
		set.Sentinels = append(set.Sentinels, s.addr)
	}
	for _, s := range set.Sentinels {
		waitFor(t, 30*time.Second, "sentinel "+s+" to know the replica and the other sentinels", func() (bool, string) {
			reply := command(s, opts.SentinelPassword, "SENTINEL", "MASTER", set.Master)
			return fieldIs(reply, "num-slaves", "1") && fieldIs(reply, "num-other-sentinels", "2"), reply
		})
	}
	return set
}

// URL is the Sentinel URL of the set, as the store reads it (go-redis'
// ParseFailoverURL): the first Sentinel as host, the others as addr
// parameters, the Sentinels' password as user information and the data
// nodes' as the password parameter.
func (s *SentinelSet) URL(db int) string {
	u := "redis://"
	if s.SentinelPassword != "" {
		u += ":" + s.SentinelPassword + "@"
	}
	u += fmt.Sprintf("%s/%d?master_name=%s", s.Sentinels[0], db, s.Master)
	for _, a := range s.Sentinels[1:] {
		u += "&addr=" + a
	}
	if s.Password != "" {
		u += "&password=" + s.Password
	}
	return u
}

// MasterAddr is the master's address as the first Sentinel that answers
// reports it.
func (s *SentinelSet) MasterAddr() string {
	for _, a := range s.Sentinels {
		reply := command(a, s.SentinelPassword, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", s.Master)
		if f := strings.Fields(reply); len(f) == 2 {
			return net.JoinHostPort(f[0], f[1])
		}
	}
	return ""
}

// StopPrimary stops the primary with SIGTERM, as an orchestrator stops a
// node (Redis then waits for its replica to catch up before it exits, so no
// acknowledged write is lost), and waits until it has exited.
func (s *SentinelSet) StopPrimary(t testing.TB) {
	t.Helper()
	_ = s.primary.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.primary.exited:
	case <-time.After(20 * time.Second):
		_ = s.primary.cmd.Process.Kill()
		<-s.primary.exited
		t.Logf("the primary did not exit within 20s of SIGTERM; killed it:\n%s", s.primary.out.String())
	}
}

// WaitFailover waits until the Sentinels report a master other than the
// original primary and that master says it is one; it returns its address.
func (s *SentinelSet) WaitFailover(t testing.TB, timeout time.Duration) string {
	t.Helper()
	var addr string
	waitFor(t, timeout, "the sentinels to promote the replica", func() (bool, string) {
		addr = s.MasterAddr()
		if addr == "" || addr == s.Primary {
			return false, "master still " + addr
		}
		info := command(addr, s.Password, "INFO", "replication")
		return strings.Contains(info, "role:master"), info
	})
	return addr
}

// startServer starts a redis-server without persistence on a free port.
func startServer(t testing.TB, bin, name string, args []string) *server {
	t.Helper()
	var last error
	for range 3 {
		port := FreePort(t)
		s, err := spawn(t, bin, append([]string{
			"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", t.TempDir(),
			"--save", "", "--appendonly", "no",
		}, args...), port)
		if err == nil {
			return s
		}
		last = fmt.Errorf("%s: %w", name, err)
	}
	t.Fatalf("start redis-server: %v", last)
	return nil
}

// startSentinel starts redis-server --sentinel with the configuration
// lines conf (a Sentinel rewrites its configuration file, so each has its
// own in dir).
func startSentinel(t testing.TB, bin, name, dir string, conf []string) *server {
	t.Helper()
	var last error
	for range 3 {
		port := FreePort(t)
		lines := make([]string, len(conf))
		for i, l := range conf {
			if l == "port 0" {
				l = "port " + strconv.Itoa(port)
			}
			lines[i] = l
		}
		file := filepath.Join(dir, "sentinel.conf")
		if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := spawn(t, bin, []string{file, "--sentinel"}, port)
		if err == nil {
			return s
		}
		last = fmt.Errorf("%s: %w", name, err)
	}
	t.Fatalf("start redis sentinel: %v", last)
	return nil
}

// spawn starts bin with args, waits until it answers PING on port and kills
// it at cleanup.
func spawn(t testing.TB, bin string, args []string, port int) (*server, error) {
	cmd := exec.Command(bin, args...)
	s := &server{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), cmd: cmd, out: &syncBuffer{}, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = s.out, s.out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		_ = cmd.Wait()
		close(s.exited)
	}()
	stop := func() {
		_ = cmd.Process.Kill()
		<-s.exited
	}
	deadline := time.Now().Add(10 * time.Second)
	for !pingRaw(s.addr) {
		select {
		case <-s.exited:
			return nil, fmt.Errorf("exited early: %s", s.out.String())
		default:
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("no PING answer on %s within 10s: %s", s.addr, s.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Cleanup(stop)
	return s, nil
}

// waitFor polls cond until it holds, failing the test after timeout with
// what cond last saw.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, seen := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; last seen:\n%s", timeout, what, seen)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// command sends one command to the server at addr (after AUTH password,
// when set) over RESP and returns the reply flattened to text: bulk strings
// and simple strings one per line, errors as "-ERR …". It is a few lines of
// RESP instead of a client so that the fixtures do not depend on the client
// under test.
func command(addr, password string, args ...string) string {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "-dial: " + err.Error()
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	r := bufio.NewReader(c)
	send := func(args []string) string {
		var b strings.Builder
		fmt.Fprintf(&b, "*%d\r\n", len(args))
		for _, a := range args {
			fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
		}
		if _, err := c.Write([]byte(b.String())); err != nil {
			return "-write: " + err.Error()
		}
		var out strings.Builder
		if err := readReply(r, &out); err != nil {
			return "-read: " + err.Error()
		}
		return out.String()
	}
	if password != "" {
		if reply := send([]string{"AUTH", password}); strings.HasPrefix(reply, "-") {
			return reply
		}
	}
	return send(args)
}

// readReply reads one RESP2 reply into out.
func readReply(r *bufio.Reader, out *strings.Builder) error {
	line, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return fmt.Errorf("empty reply line")
	}
	switch line[0] {
	case '+', ':':
		out.WriteString(line[1:] + "\n")
	case '-':
		out.WriteString(line + "\n")
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return err
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return err
		}
		out.Write(buf[:n])
		out.WriteString("\n")
	case '*':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return err
		}
		for range n {
			if err := readReply(r, out); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("unexpected reply %q", line)
	}
	return nil
}

// fieldIs reports whether a flattened field/value reply (one item a line)
// has field name with value want.
func fieldIs(reply, name, want string) bool {
	f := strings.Split(reply, "\n")
	for i := 0; i+1 < len(f); i += 2 {
		if f[i] == name {
			return f[i+1] == want
		}
	}
	return false
}
