package upgrade

import (
	"net"
	"net/http"
	"time"
)

// Connection pool sizes and timeouts of NewTransport.
const (
	// TransportIdlePerHost is how many idle keep-alive connections
	// NewTransport keeps per host: enough for the bot's busiest bursts
	// (plans of many users, jobs followed in parallel) to reuse
	// connections instead of opening, and in production TLS-handshaking,
	// a new one per request. http.DefaultTransport keeps 2.
	TransportIdlePerHost = 64
	// TransportIdle is how many idle connections NewTransport keeps in all.
	TransportIdle = 256
)

// NewTransport returns a new, tuned HTTP transport for one API client (a
// GeminiDB Client, or the Slack client in main): keep-alive connections
// pooled (TransportIdlePerHost idle per host, TransportIdle in all, idle
// ones closed after 90s), HTTP/2 attempted over TLS, bounded dial (10s),
// TLS handshake (10s) and response headers (60s, a last resort: each call's
// own deadline comes from its context), proxies from the environment as
// http.DefaultTransport does. Give every client its own, so that one
// client's pool cannot starve another's.
func NewTransport() *http.Transport {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           d.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          TransportIdle,
		MaxIdleConnsPerHost:   TransportIdlePerHost,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}
