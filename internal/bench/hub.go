package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opendps/dps/device"
)

// HubOptions configure a hub telemetry run: Devices MQTT devices
// connected over TLS to Address, each publishing QoS 1 messages of
// PayloadBytes with at most InFlight unacknowledged, until Messages were
// sent in all or Duration passed (whichever is set; both: the first).
type HubOptions struct {
	Address  string // host:port of the MQTT endpoint
	Host     string // the hub's host name (the username's first segment)
	GroupKey string // base64; device keys are derived from it (device.DeriveKey)
	IDs      []string
	// InFlight is the unacknowledged messages per device (default 1).
	InFlight     int
	PayloadBytes int
	Messages     int
	Duration     time.Duration
	// Rate, when positive, paces the sends to this many messages/s in all.
	Rate float64
	// ConnectConcurrency bounds the connects under way (default 32).
	ConnectConcurrency int
	TLS                *tls.Config
	Progress           io.Writer
}

// HubSummary is the result of a hub run.
type HubSummary struct {
	Devices         int            `json:"devices"`
	Connected       int            `json:"connected"`
	ConnectSeconds  float64        `json:"connectSeconds"`
	InFlight        int            `json:"inFlight"`
	PayloadBytes    int            `json:"payloadBytes"`
	Rate            float64        `json:"rate,omitempty"`
	Sent            int            `json:"sent"`
	Acknowledged    int            `json:"acknowledged"`
	Failed          map[string]int `json:"failed"`
	Seconds         float64        `json:"seconds"`
	PerSecond       float64        `json:"messagesPerSecond"`
	LatencyMS       Latency        `json:"pubackLatencyMs"`
	ConnectFailures map[string]int `json:"connectFailures"`
}

func (s HubSummary) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "hub telemetry, QoS 1, %d B, %d devices (%d connected in %.2fs), %d in flight each", s.PayloadBytes, s.Devices, s.Connected, s.ConnectSeconds, s.InFlight)
	if s.Rate > 0 {
		fmt.Fprintf(&b, ", paced at %.0f/s", s.Rate)
	}
	fmt.Fprintf(&b, "\n  acknowledged:     %d of %d in %.2fs\n", s.Acknowledged, s.Sent, s.Seconds)
	fmt.Fprintf(&b, "  messages/s:       %.0f\n", s.PerSecond)
	fmt.Fprintf(&b, "  PUBACK (ms):      p50 %.1f  p90 %.1f  p99 %.1f  max %.1f\n", s.LatencyMS.P50, s.LatencyMS.P90, s.LatencyMS.P99, s.LatencyMS.Max)
	if len(s.ConnectFailures) > 0 {
		fmt.Fprintf(&b, "  connect failures: %v\n", s.ConnectFailures)
	}
	if len(s.Failed) > 0 {
		fmt.Fprintf(&b, "  failed:           %v\n", s.Failed)
	}
	return b.String()
}

// RunHub connects the devices, then publishes until the count or the
// duration is reached, and closes them.
func RunHub(ctx context.Context, o HubOptions) (HubSummary, error) {
	if len(o.IDs) == 0 || (o.Messages <= 0 && o.Duration <= 0) {
		return HubSummary{}, errors.New("bench: hub runs need devices and a message count or a duration")
	}
	if o.InFlight <= 0 {
		o.InFlight = 1
	}
	if o.ConnectConcurrency <= 0 {
		o.ConnectConcurrency = 32
	}
	s := HubSummary{Devices: len(o.IDs), InFlight: o.InFlight, PayloadBytes: o.PayloadBytes, Rate: o.Rate,
		Failed: map[string]int{}, ConnectFailures: map[string]int{}}
	var mu sync.Mutex
	hubs := make([]*device.Hub, len(o.IDs))
	t0 := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, o.ConnectConcurrency)
	for i, id := range o.IDs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			key, err := device.DeriveKey(o.GroupKey, id)
			if err == nil {
				hubs[i], err = device.ConnectHub(ctx, device.HubOptions{Host: o.Host, DeviceID: id, Credential: device.SymmetricKey(key),
					Address: o.Address, TLS: o.TLS, KeepAlive: 10 * time.Minute})
			}
			if err != nil {
				mu.Lock()
				s.ConnectFailures[firstLine(err.Error())]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	s.ConnectSeconds = time.Since(t0).Seconds()
	defer func() {
		for _, h := range hubs {
			if h != nil {
				h.Close()
			}
		}
	}()
	for _, h := range hubs {
		if h != nil {
			s.Connected++
		}
	}
	if s.Connected == 0 {
		return s, errors.New("bench: no device connected")
	}
	if o.Progress != nil {
		fmt.Fprintf(o.Progress, "%d of %d devices connected in %.2fs\n", s.Connected, s.Devices, s.ConnectSeconds)
	}

	body := []byte(strings.Repeat("x", o.PayloadBytes))
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if o.Duration > 0 {
		runCtx, cancel = context.WithTimeout(runCtx, o.Duration)
		defer cancel()
	}
	var (
		next, acked atomic.Int64
		lat         [][]time.Duration
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
					n := acked.Load()
					fmt.Fprintf(o.Progress, "\r%d acknowledged, %.0f/s   ", n, float64(n)/time.Since(start).Seconds())
				}
			}
		}()
	}
	for _, h := range hubs {
		if h == nil {
			continue
		}
		for range o.InFlight {
			mine := make([]time.Duration, 0, 64)
			wg.Go(func() {
				defer func() {
					mu.Lock()
					lat = append(lat, mine)
					mu.Unlock()
				}()
				for {
					i := next.Add(1) - 1
					if (o.Messages > 0 && i >= int64(o.Messages)) || runCtx.Err() != nil {
						return
					}
					if o.Rate > 0 {
						at := start.Add(time.Duration(float64(i) / o.Rate * float64(time.Second)))
						if d := time.Until(at); d > 0 {
							select {
							case <-time.After(d):
							case <-runCtx.Done():
								return
							}
						}
					}
					t := time.Now()
					err := h.Send(runCtx, body, nil)
					d := time.Since(t)
					if err != nil {
						if runCtx.Err() != nil && ctx.Err() == nil {
							return // the duration ended with this message unacknowledged: not counted
						}
						mu.Lock()
						s.Failed[firstLine(err.Error())]++
						s.Sent++
						mu.Unlock()
						continue
					}
					acked.Add(1)
					mine = append(mine, d)
				}
			})
		}
	}
	wg.Wait()
	close(stop)
	elapsed := time.Since(start)
	if o.Duration > 0 && elapsed > o.Duration {
		elapsed = o.Duration // what was acknowledged after it was not counted
	}
	if o.Progress != nil {
		fmt.Fprintln(o.Progress)
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	s.Acknowledged = len(all)
	s.Sent += len(all)
	s.Seconds = elapsed.Seconds()
	s.PerSecond = float64(s.Acknowledged) / elapsed.Seconds()
	s.LatencyMS = percentiles(all)
	return s, ctx.Err()
}

// percentiles of sorted durations, in milliseconds.
func percentiles(sorted []time.Duration) Latency {
	pct := func(p float64) float64 {
		if len(sorted) == 0 {
			return 0
		}
		return float64(sorted[int(p*float64(len(sorted)-1))].Microseconds()) / 1000
	}
	return Latency{P50: pct(0.50), P90: pct(0.90), P99: pct(0.99), Max: pct(1)}
}
