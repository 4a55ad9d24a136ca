// Package bench is the load generator behind `dpsctl bench`: it plays N
// devices against a DPS endpoint with symmetric keys derived from a group
// key, C registrations in flight, over HTTPS (kept-alive or a fresh TLS
// connection per device) or MQTT, and reports throughput and latency.
// RunHub (hub.go) is `dpsctl bench hub`: MQTT devices publishing QoS 1
// telemetry to a built-in hub, with PUBACK latency.
package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opendps/dps/device"
)

// Options configure a run.
type Options struct {
	Endpoint    string // https://host:port
	MQTTAddress string // host:port (mqtt transport)
	IDScope     string
	GroupKey    string // base64; device keys are derived from it
	Transport   string // "https" (default) or "mqtt"
	Devices     int
	Concurrency int
	// FreshConnections gives every device its own TLS connection, as real
	// devices do; otherwise HTTPS connections are kept alive and shared.
	FreshConnections bool
	PayloadBytes     int
	// PollInterval between polls; 0 polls at once.
	PollInterval time.Duration
	// HonourRetryAfter waits what the server's Retry-After says instead.
	HonourRetryAfter bool
	Prefix           string
	TLS              *tls.Config
	// Progress, when set, receives a line every second.
	Progress io.Writer
}

// Summary is the result of a run.
type Summary struct {
	Transport        string         `json:"transport"`
	FreshConnections bool           `json:"freshConnections"`
	Devices          int            `json:"devices"`
	Concurrency      int            `json:"concurrency"`
	Completed        int            `json:"completed"`
	Failed           map[string]int `json:"failed"`
	Seconds          float64        `json:"seconds"`
	PerSecond        float64        `json:"registrationsPerSecond"`
	LatencyMS        Latency        `json:"latencyMs"`
}

// Latency holds register→assigned percentiles in milliseconds.
type Latency struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

func (s Summary) String() string {
	var b strings.Builder
	mode := "kept-alive connections"
	if s.FreshConnections || s.Transport == "mqtt" {
		mode = "a fresh TLS connection per device"
	}
	fmt.Fprintf(&b, "%s, %s, %d devices, %d in flight\n", s.Transport, mode, s.Devices, s.Concurrency)
	fmt.Fprintf(&b, "  completed:        %d in %.2fs\n", s.Completed, s.Seconds)
	fmt.Fprintf(&b, "  registrations/s:  %.0f\n", s.PerSecond)
	fmt.Fprintf(&b, "  latency (ms):     p50 %.1f  p90 %.1f  p99 %.1f  max %.1f\n", s.LatencyMS.P50, s.LatencyMS.P90, s.LatencyMS.P99, s.LatencyMS.Max)
	if len(s.Failed) > 0 {
		fmt.Fprintf(&b, "  failed:           %v\n", s.Failed)
	}
	return b.String()
}

// Run plays the devices and waits for every registration to end.
func Run(ctx context.Context, o Options) (Summary, error) {
	if o.Devices <= 0 || o.Concurrency <= 0 {
		return Summary{}, errors.New("bench: devices and concurrency must be positive")
	}
	if o.Transport == "" {
		o.Transport = "https"
	}
	if o.Prefix == "" {
		o.Prefix = fmt.Sprintf("bench-%d", time.Now().UnixNano())
	}
	var payload any
	if o.PayloadBytes > 0 {
		payload = map[string]string{"data": strings.Repeat("x", o.PayloadBytes)}
	}
	shared := &http.Transport{TLSClientConfig: o.TLS, MaxIdleConns: o.Concurrency, MaxIdleConnsPerHost: o.Concurrency, IdleConnTimeout: time.Minute}
	defer shared.CloseIdleConnections()

	var (
		next      atomic.Int64
		completed atomic.Int64
		mu        sync.Mutex
		failed    = map[string]int{}
		latencies = make([]time.Duration, 0, o.Devices)
		wg        sync.WaitGroup
	)
	start := time.Now()
	stop := make(chan struct{})
	if o.Progress != nil {
		go func() {
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					n := completed.Load()
					fmt.Fprintf(o.Progress, "\r%d/%d registered, %.0f/s   ", n, o.Devices, float64(n)/time.Since(start).Seconds())
				}
			}
		}()
	}
	for range o.Concurrency {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(o.Devices) || ctx.Err() != nil {
					return
				}
				id := fmt.Sprintf("%s-%07d", o.Prefix, i)
				key, err := device.DeriveKey(o.GroupKey, id)
				if err != nil {
					mu.Lock()
					failed["bad group key"]++
					mu.Unlock()
					continue
				}
				c := &device.Client{Endpoint: o.Endpoint, IDScope: o.IDScope, Transport: o.Transport, MQTTAddress: o.MQTTAddress, TLSConfig: o.TLS,
					PollInterval: o.PollInterval}
				if !o.HonourRetryAfter && c.PollInterval == 0 {
					c.PollInterval = time.Nanosecond
				}
				var tr *http.Transport
				if o.Transport == "https" {
					tr = shared
					if o.FreshConnections {
						tr = &http.Transport{TLSClientConfig: o.TLS, DisableKeepAlives: true}
					}
					c.HTTPClient = &http.Client{Transport: tr, Timeout: 30 * time.Second}
				}
				t0 := time.Now()
				res, err := c.Register(ctx, id, device.SymmetricKey(key), payload)
				d := time.Since(t0)
				if tr != nil && tr != shared {
					tr.CloseIdleConnections()
				}
				mu.Lock()
				switch {
				case err != nil:
					var de *device.Error
					if errors.As(err, &de) {
						failed[fmt.Sprintf("%d", de.ErrorCode)]++
					} else {
						var ue *url.Error
						if errors.As(err, &ue) {
							err = ue.Err // the URL is different for every device
						}
						failed["transport: "+firstLine(err.Error())]++
					}
				case res.Status != "assigned":
					code := res.Status
					if res.RegistrationState != nil && res.RegistrationState.ErrorCode != 0 {
						code = fmt.Sprintf("%s %d", res.Status, res.RegistrationState.ErrorCode)
					}
					failed[code]++
				default:
					latencies = append(latencies, d)
					completed.Add(1)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(stop)
	elapsed := time.Since(start)
	if o.Progress != nil {
		fmt.Fprintln(o.Progress)
	}
	s := Summary{Transport: o.Transport, FreshConnections: o.FreshConnections, Devices: o.Devices, Concurrency: o.Concurrency,
		Completed: int(completed.Load()), Failed: failed, Seconds: elapsed.Seconds()}
	s.PerSecond = float64(s.Completed) / elapsed.Seconds()
	slices.Sort(latencies)
	pct := func(p float64) float64 {
		if len(latencies) == 0 {
			return 0
		}
		i := int(p * float64(len(latencies)-1))
		return float64(latencies[i].Microseconds()) / 1000
	}
	s.LatencyMS = Latency{P50: pct(0.50), P90: pct(0.90), P99: pct(0.99), Max: pct(1)}
	return s, ctx.Err()
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 80 {
		s = s[:80]
	}
	return s
}
