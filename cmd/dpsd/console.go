package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/access"
	"github.com/opendps/dps/internal/console"
	"github.com/opendps/dps/internal/enrollment"
	"github.com/opendps/dps/internal/regevents"
)

// ConsoleConfig configures the web console, served under /console/ on the
// HTTPS listener (its certificate; the admin listener is plain HTTP).
type ConsoleConfig struct {
	// Enabled serves the console (default true).
	Enabled *bool `yaml:"enabled"`
	// SessionIdle ends a console session after this long without a
	// request (default 30m).
	SessionIdle time.Duration `yaml:"sessionIdle"`
}

func (c ConsoleConfig) enabled() bool { return c.Enabled == nil || *c.Enabled }

func (c ConsoleConfig) validate(bad func(key, format string, args ...any)) {
	if c.SessionIdle != 0 && (c.SessionIdle < time.Minute || c.SessionIdle > 24*time.Hour) {
		bad("console.sessionIdle", "%s: must be between 1m and 24h", c.SessionIdle)
	}
}

// newConsole builds the web console over the same use cases and access
// policies as the service APIs: checker holds the DPS service's policies,
// hubPolicies each built-in hub's. It returns nil when the console is
// disabled.
func (s *server) newConsole(checker *access.Checker, manager *enrollment.Service, hubPolicies map[string][]access.Policy) (*console.Handler, error) {
	if !s.cfg.Console.enabled() {
		return nil, nil
	}
	hubAuth := map[string]console.Authorizer{}
	for host, policies := range hubPolicies {
		c, err := access.New(policies, []string{host}, nil)
		if err != nil {
			return nil, fmt.Errorf("linkedHubs %s: %w", host, err)
		}
		hubAuth[strings.ToLower(host)] = c
	}
	var linked []console.LinkedHub
	for _, h := range s.cfg.LinkedHubs {
		linked = append(linked, console.LinkedHub{HostName: h.HostName, BuiltIn: h.BuiltIn()})
	}
	o := console.Options{
		Manager:     manager,
		Service:     checker,
		ServiceHost: s.serviceHosts()[0],
		HubAuth:     hubAuth,
		LinkedHubs:  linked,
		Health: func(ctx context.Context) error {
			if err := s.store.Ping(ctx); err != nil {
				return err
			}
			return s.store.CheckWrite(ctx, s.cfg.NodeID)
		},
		IDScope:     s.idScope,
		Logger:      s.log,
		SessionIdle: s.cfg.Console.SessionIdle,
	}
	if s.hub != nil { // a nil *iothub.Service in the interface would not be nil
		o.Hub = s.hub
	}
	if s.faults != nil {
		o.Faults = s.faults
	}
	if s.events != nil { // the registration-events feed (regevents.go)
		o.Events = consoleFeed{s.events}
	}
	return console.New(o)
}

// consoleFeed is the registration-events feed as the console reads it.
type consoleFeed struct{ feed regevents.Feed }

func (f consoleFeed) Read(ctx context.Context, after int64, limit int, filter console.EventFilter) ([]dps.RegistrationEvent, error) {
	return f.feed.Read(ctx, regevents.Query{After: after, Limit: limit, Filter: dps.RegistrationEventFilter{
		RegistrationID: filter.RegistrationID, Group: filter.Group, Kind: filter.Kind, Since: filter.Since}})
}

func (f consoleFeed) Latest(ctx context.Context, before int64, limit int, filter console.EventFilter) ([]dps.RegistrationEvent, error) {
	return f.feed.Latest(ctx, regevents.Query{Before: before, Limit: limit, Filter: dps.RegistrationEventFilter{
		RegistrationID: filter.RegistrationID, Group: filter.Group, Kind: filter.Kind, Since: filter.Since}})
}

// Follow delivers the feed's events after after until ctx ends or the
// feed closes (each wait for new events lasts at most 30 s, then it asks
// again).
func (f consoleFeed) Follow(ctx context.Context, after int64) (<-chan dps.RegistrationEvent, error) {
	out := make(chan dps.RegistrationEvent, regevents.MaxLimit)
	go func() {
		defer close(out)
		for {
			events, err := f.feed.Follow(ctx, regevents.Query{After: after, Limit: regevents.MaxLimit}, 30*time.Second)
			if err != nil {
				return
			}
			for _, e := range events {
				select {
				case out <- e:
					after = e.Seq
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}

// withConsole serves the console's paths and hands everything else to
// next.
func withConsole(c *console.Handler, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/console" || strings.HasPrefix(r.URL.Path, console.Prefix) {
			c.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}
