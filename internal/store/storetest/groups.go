package storetest

import (
	"testing"

	"github.com/opendps/dps"
)

func symGroup(id, key string) dps.Group {
	return dps.Group{ID: id, Settings: dps.Settings{
		Attestation:        dps.Attestation{Type: dps.AttestationSymmetricKey, SymmetricKey: &dps.SymmetricKeyAttestation{PrimaryKey: dps.Key(key), SecondaryKey: "c2Vjb25kYXJ5LWtleS0xMjM0"}},
		ProvisioningStatus: dps.ProvisioningEnabled,
	}}
}

// testGroupsAcrossHandles: stores keep decoded groups in memory; a group
// created, changed or deleted through one handle (node) is what a second
// handle reports on its next call, after it has cached the old groups.
func testGroupsAcrossHandles(t *testing.T, f Factory) {
	s := f.New(t)
	other := f.Reopen(t, s)
	for _, id := range []string{"grp-a", "grp-b"} {
		if _, err := s.PutGroup(ctx(), symGroup(id, "a2V5LW9uZS0xMjM0NTY3OA=="), ""); err != nil {
			t.Fatal(err)
		}
	}
	version := func(st Store) int64 {
		t.Helper()
		v, err := st.GroupsVersion(ctx())
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	ids := func(st Store) []string {
		t.Helper()
		gs, err := st.Groups(ctx(), dps.AttestationSymmetricKey)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, g := range gs {
			out = append(out, g.ID+"="+string(g.Attestation.SymmetricKey.PrimaryKey))
		}
		return out
	}
	if got := ids(other); len(got) != 2 { // the second handle now holds both
		t.Fatalf("second handle sees %v, want grp-a and grp-b", got)
	}
	if _, err := other.Group(ctx(), "GRP-A"); err != nil {
		t.Fatalf("second handle Group: %v", err)
	}
	v0 := version(other)
	if v := version(s); v != v0 {
		t.Errorf("the handles disagree on the groups version: %d and %d", v, v0)
	}

	// Deleted through the first handle: gone for the second.
	if err := s.DeleteGroup(ctx(), "grp-a", ""); err != nil {
		t.Fatal(err)
	}
	if got := ids(other); len(got) != 1 || got[0] != "grp-b=a2V5LW9uZS0xMjM0NTY3OA==" {
		t.Errorf("after a delete through the first handle, the second sees %v, want only grp-b", got)
	}
	_, err := other.Group(ctx(), "grp-a")
	kind(t, "second handle Group(deleted)", err, dps.KindNotFound)
	v1 := version(other)
	if v1 == v0 {
		t.Errorf("groups version did not change on delete (%d)", v1)
	}

	// Changed (new key) through the first handle: the second returns the new key.
	if _, err := s.PutGroup(ctx(), symGroup("grp-b", "a2V5LXR3by0xMjM0NTY3OA=="), "*"); err != nil {
		t.Fatal(err)
	}
	if got := ids(other); len(got) != 1 || got[0] != "grp-b=a2V5LXR3by0xMjM0NTY3OA==" {
		t.Errorf("after an update through the first handle, the second sees %v, want the new key", got)
	}
	if g, err := other.Group(ctx(), "grp-b"); err != nil || g.Attestation.SymmetricKey.PrimaryKey != "a2V5LXR3by0xMjM0NTY3OA==" {
		t.Errorf("second handle Group after update = %+v, %v", g.Attestation.SymmetricKey, err)
	}
	v2 := version(other)
	if v2 == v1 {
		t.Errorf("groups version did not change on update (%d)", v2)
	}

	// Created through the second handle: the first (which cached one group) sees it.
	if got := ids(s); len(got) != 1 {
		t.Fatalf("first handle sees %v", got)
	}
	if _, err := other.PutGroup(ctx(), symGroup("grp-c", "a2V5LW9uZS0xMjM0NTY3OA=="), ""); err != nil {
		t.Fatal(err)
	}
	if got := ids(s); len(got) != 2 {
		t.Errorf("after a create through the second handle, the first sees %v, want grp-b and grp-c", got)
	}
	v3 := version(s)
	if v3 == v2 || version(other) != v3 {
		t.Errorf("groups version after a create through the second handle = %d (first) and %d (second), was %d", v3, version(other), v2)
	}
	// Writes to other tables leave the version (and the cached groups) alone.
	if _, err := s.PutEnrollment(ctx(), enr("not-a-group"), ""); err != nil {
		t.Fatal(err)
	}
	if v4 := version(other); v4 != v3 {
		t.Errorf("an enrollment write moved the groups version from %d to %d", v3, v4)
	}
}

// testCheckWrite: a store that takes writes passes the readiness write
// check, repeatedly, for several nodes.
func testCheckWrite(t *testing.T, f Factory) {
	s := f.New(t)
	for range 3 {
		for _, node := range []string{"node-a", "node-b"} {
			if err := s.CheckWrite(ctx(), node); err != nil {
				t.Fatalf("CheckWrite(%s): %v", node, err)
			}
		}
	}
}
