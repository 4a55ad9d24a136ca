//go:build tpmsimulator

package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/wire"
)

// TestTPMDeviceEndToEnd plays a TPM device with a software TPM over real
// TLS: the challenge blob is activated and imported inside the TPM, the TPM
// signs the SAS, the registration is assigned, and the hub-key blob imports
// into the TPM with an HMAC equal to the hub connector's key.
func TestTPMDeviceEndToEnd(t *testing.T) {
	s, hc := startServer(t, t.TempDir(), fmt.Sprintf(policiesYAML, ownerKey, readerKey))
	ctx := context.Background()
	svc := serviceClient(t, s, hc, "provisioningserviceowner", ownerKey)
	dev := dpstest.NewTPMDevice(t)
	if _, err := svc.PutEnrollment(ctx, wire.IndividualEnrollment{RegistrationID: "tpm-e2e",
		Attestation: &wire.AttestationMechanism{Type: "tpm", TPM: &wire.TPMAttestation{EndorsementKey: dev.EKBase64()}}}, ""); err != nil {
		t.Fatal(err)
	}
	base := s.endpoint() + "/" + s.idScope + "/registrations/tpm-e2e"
	first := []byte(`{"registrationId":"tpm-e2e","tpm":{"endorsementKey":"` + dev.EKBase64() + `","storageRootKey":"` + dev.SRKBase64() + `"}}`)

	for round, second := range [][]byte{
		first,                                  // Node, C and C# repeat the tpm object
		[]byte(`{"registrationId":"tpm-e2e"}`), // aziot does not
	} {
		r := do(t, hc, "PUT", base+"/register?api-version=2021-06-01", "", first)
		if r.status != 401 || r.body["authenticationKey"] == nil || r.body["keyName"] != "registration" || r.body["status"] != nil {
			t.Fatalf("round %d: challenge = %d %s", round, r.status, r.raw)
		}
		if err := dev.Import(r.body["authenticationKey"].(string)); err != nil {
			t.Fatalf("round %d: the device's TPM refused the challenge blob: %v", round, err)
		}
		auth, err := dev.SAS(s.idScope, "tpm-e2e", time.Now().Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		r = do(t, hc, "PUT", base+"/register?api-version=2021-06-01", auth, second)
		if r.status != 202 {
			t.Fatalf("round %d: register with the TPM's SAS = %d %s", round, r.status, r.raw)
		}
		opID := r.body["operationId"].(string)
		var final rawResponse
		for range 200 {
			final = do(t, hc, "GET", base+"/operations/"+opID, auth, nil)
			if final.body["status"] != "assigning" {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		var res struct {
			Status            string `json:"status"`
			RegistrationState struct {
				AssignedHub string `json:"assignedHub"`
				DeviceID    string `json:"deviceId"`
				TPM         struct {
					AuthenticationKey string `json:"authenticationKey"`
				} `json:"tpm"`
			} `json:"registrationState"`
		}
		json.Unmarshal([]byte(final.raw), &res)
		if res.Status != "assigned" || res.RegistrationState.TPM.AuthenticationKey == "" {
			t.Fatalf("round %d: final = %s", round, final.raw)
		}
		// The hub key: the device imports it and its TPM HMAC equals one
		// made with the key the hub connector received.
		if err := dev.Import(res.RegistrationState.TPM.AuthenticationKey); err != nil {
			t.Fatalf("round %d: hub-key blob import: %v", round, err)
		}
		hd, err := s.store.HubDevice(ctx, res.RegistrationState.AssignedHub, "tpm-e2e")
		if err != nil {
			t.Fatal(err)
		}
		data := []byte("hub.example.net/devices/tpm-e2e\n1800000000")
		got, err := dev.HMAC(data)
		if err != nil {
			t.Fatal(err)
		}
		k2, _ := base64.StdEncoding.DecodeString(string(hd.Auth.PrimaryKey))
		m := hmac.New(sha256.New, k2)
		m.Write(data)
		if !hmac.Equal(got, m.Sum(nil)) {
			t.Fatalf("round %d: the TPM's HMAC with the hub key differs from the hub connector's key", round)
		}
	}

	// A SAS from a stale key (the hub key, not a challenge) is refused.
	auth, _ := dev.SAS(s.idScope, "tpm-e2e", time.Now().Add(time.Hour))
	if r := do(t, hc, "PUT", base+"/register", auth, first); r.status != 401 || r.body["errorCode"] != float64(401002) {
		t.Errorf("stale key = %d %s", r.status, r.raw)
	}
}
