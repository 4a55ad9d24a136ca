// Command webhook is an example custom allocation webhook for dps (and
// Azure DPS): it assigns each device by the "model" in its registration
// payload, gives it an initial twin whose desired properties it chooses
// from the payload (the telemetry interval and firmware of that model),
// and returns a payload the device receives in registrationState.payload.
//
//	go run ./examples/webhook -listen 127.0.0.1:8080
//
// Point an enrollment at it with
//
//	dpsctl enrollment create dev-1 --allocation-policy custom \
//	    --webhook-url http://127.0.0.1:8080/allocate --hub hub-a.example.net --hub hub-b.example.net
//
// (http:// URLs need `webhook: { allowHTTP: true }` in dpsd's configuration;
// use -cert/-key to serve HTTPS.)
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/opendps/dps/webhook"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to serve on")
	cert := flag.String("cert", "", "TLS certificate file (serve HTTPS)")
	key := flag.String("key", "", "TLS key file")
	secret := flag.String("secret", os.Getenv("WEBHOOK_SECRET"), "verify dps's X-Dps-Signature with this secret (dpsd webhook.signingSecret) [$WEBHOOK_SECRET]")
	flag.Parse()

	var opts webhook.HandlerOptions
	if *secret != "" {
		opts.Secret = []byte(*secret)
	}
	mux := http.NewServeMux()
	mux.Handle("/allocate", webhook.Handler(Allocate, opts))
	srv := &http.Server{Addr: *listen, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	log.Printf("custom allocation webhook on %s/allocate", *listen)
	var err error
	if *cert != "" {
		err = srv.ListenAndServeTLS(*cert, *key)
	} else {
		err = srv.ListenAndServe()
	}
	log.Fatal(err)
}

// Allocate picks a hub by payload.model: a hub whose name contains the model
// if there is one, else the first offered hub.
func Allocate(ctx context.Context, req *webhook.Request) (*webhook.Response, error) {
	var p struct {
		Model    string `json:"model"`
		Firmware string `json:"firmware"`
	}
	if len(req.DeviceRuntimeContext.Payload) > 0 {
		if err := json.Unmarshal(req.DeviceRuntimeContext.Payload, &p); err != nil {
			return nil, &webhook.Error{Status: http.StatusBadRequest, Message: "payload is not an object"}
		}
	}
	if len(req.LinkedHubs) == 0 {
		return nil, &webhook.Error{Status: http.StatusBadRequest, Message: "no hubs offered"}
	}
	hub := req.LinkedHubs[0]
	for _, h := range req.LinkedHubs {
		if p.Model != "" && strings.Contains(h, p.Model) {
			hub = h
		}
	}
	tags, _ := json.Marshal(map[string]string{"model": p.Model})
	desired, _ := json.Marshal(desiredFor(p.Model, p.Firmware))
	payload, _ := json.Marshal(map[string]any{
		"message":  fmt.Sprintf("welcome, %s", req.DeviceRuntimeContext.RegistrationID),
		"hub":      hub,
		"received": req.DeviceRuntimeContext.Payload,
	})
	return &webhook.Response{
		IoTHubHostName: hub,
		InitialTwin:    &webhook.Twin{Tags: tags, Properties: &webhook.TwinProperties{Desired: desired}},
		Payload:        payload,
	}, nil
}

// desiredFor is the configuration a device of model running firmware gets
// as its twin's desired properties: the model's telemetry interval and
// firmware, and whether the device should update.
func desiredFor(model, firmware string) map[string]any {
	interval, target := 300, "2.0.0"
	switch model {
	case "t1":
		interval, target = 60, "1.4.0"
	case "t2":
		interval, target = 30, "2.1.0"
	}
	return map[string]any{
		"telemetryIntervalSeconds": interval,
		"firmwareTarget":           target,
		"firmwareUpdate":           firmware != target,
	}
}
