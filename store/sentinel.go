package store

import (
	"errors"
	"fmt"
	neturl "net/url"
	"strings"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// A Sentinel URL names a set of Redis Sentinels and the master they watch,
// in the form go-redis' ParseFailoverURL reads:
//
//	redis://[:sentinel-password@]sentinel-1:26379/0?master_name=mymaster&addr=sentinel-2:26379&addr=sentinel-3:26379[&password=data-password]
//
// The host of the URL and every addr parameter are Sentinels; master_name is
// the name they monitor; the user information is the Sentinels' own
// password (their requirepass), and the password parameter is the password
// of the master and replicas (their requirepass). The client asks the
// Sentinels where the master is, connects there, and asks again when the
// master fails over, so the store follows a promotion without a restart.
// What the store keeps is the same as with a plain redis:// URL.

// sentinelMasterParam is the query parameter that makes a redis:// URL a
// Sentinel URL.
const sentinelMasterParam = "master_name"

// IsSentinelURL reports whether raw is a redis:// or rediss:// URL naming a
// Sentinel set (it has a master_name parameter), which OpenRedisWith opens
// with a failover client.
func IsSentinelURL(raw string) bool {
	scheme, _, ok := strings.Cut(raw, "://")
	if !ok || (!strings.EqualFold(scheme, "redis") && !strings.EqualFold(scheme, "rediss")) {
		return false
	}
	u, err := neturl.Parse(stripUserinfo(raw))
	if err != nil {
		return false
	}
	return u.Query().Has(sentinelMasterParam)
}

// NewRedisClient returns a client of the Redis that url names without
// connecting: a redis://, rediss:// or unix:// URL as go-redis' ParseURL
// reads it, or a Sentinel URL (see IsSentinelURL) as ParseFailoverURL reads
// it. Errors never contain a password. doctor uses it for its checks of the
// server's configuration; OpenRedisWith for the store.
func NewRedisClient(url string) (*redis.Client, error) {
	c, _, err := newRedisClient(url)
	return c, err
}

// newRedisClient is NewRedisClient, also returning the description of the
// database without credentials that Path and messages show.
func newRedisClient(url string) (*redis.Client, string, error) {
	if IsSentinelURL(url) {
		return newSentinelClient(url)
	}
	ro, err := redis.ParseURL(url)
	if err != nil {
		return nil, "", invalidURL(url, "Redis", err)
	}
	// Maintenance notifications are a Redis Enterprise/Cloud feature; in
	// "auto" mode go-redis probes for them on every new connection.
	ro.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	return redis.NewClient(ro), redactedRedisURL(url, ro), nil
}

// newSentinelClient builds the failover client of a Sentinel URL.
func newSentinelClient(url string) (*redis.Client, string, error) {
	fo, err := redis.ParseFailoverURL(url)
	if err != nil {
		return nil, "", invalidURL(url, "Redis Sentinel", err)
	}
	if fo.MasterName == "" {
		return nil, "", invalidURL(url, "Redis Sentinel", errors.New("master_name is empty: give the name the Sentinels monitor (sentinel monitor <name> …)"))
	}
	if fo.ReplicaOnly {
		// The store writes; a replica refuses writes.
		return nil, "", invalidURL(url, "Redis Sentinel", errors.New("replica_only cannot be used: the store writes, and only the master takes writes"))
	}
	return redis.NewFailoverClient(fo), redactedSentinelURL(url, fo), nil
}

// invalidURL is the error of a URL that cannot be parsed, naming it without
// credentials and without any password that the parser's message quotes.
func invalidURL(url, kind string, err error) error {
	if ue, ok := errors.AsType[*neturl.Error](err); ok {
		err = ue.Err // without the URL that net/url quotes
	}
	return scrubURLPasswords(fmt.Errorf("open store %s: invalid %s URL: %w", RedactURL(url), kind, err), url)
}

// redactedSentinelURL describes a Sentinel set without credentials: scheme,
// the Sentinels, the master's name and the database number.
func redactedSentinelURL(raw string, o *redis.FailoverOptions) string {
	scheme, _, _ := strings.Cut(raw, "://")
	return fmt.Sprintf("%s://%s/%d?master_name=%s", strings.ToLower(scheme),
		strings.Join(o.SentinelAddrs, ","), o.DB, neturl.QueryEscape(o.MasterName))
}

// scrubURLPasswords is scrubPassword for every password a store URL may
// hold: the user information's (a Sentinel's, or a plain Redis's) and the
// password parameter of a Sentinel URL (the master's).
func scrubURLPasswords(err error, raw string) error {
	err = scrubPassword(err, raw)
	u, perr := neturl.Parse(stripUserinfo(raw))
	if perr != nil {
		return err
	}
	pw := u.Query().Get("password")
	if pw == "" {
		return err
	}
	msg := strings.ReplaceAll(err.Error(), pw, "xxxxx")
	if esc := neturl.QueryEscape(pw); esc != pw {
		msg = strings.ReplaceAll(msg, esc, "xxxxx")
	}
	if msg == err.Error() {
		return err
	}
	return errors.New(msg)
}
