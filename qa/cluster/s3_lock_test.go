package cluster_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/cairntest"
	"github.com/cairnhq/cairn/qa/harness"
	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/minio/minio-go/v7"
)

// Object lock holds across nodes, leader changes and restarts: a version
// under COMPLIANCE retention or legal hold cannot be deleted, and its
// retention cannot be shortened, through any node, after the leader was
// killed, and after every node restarted.
func TestS3ObjectLockAcrossLeaderChanges(t *testing.T) {
	c, a, cred := s3Pool(t, "backups")
	ctx := context.Background()
	client := func(n *harness.Node) *minio.Client { return s3Client(t, n, cred.AccessKey, cred.SecretKey) }
	s1 := client(c.Node(1))
	if err := s1.MakeBucket(ctx, "vault", minio.MakeBucketOptions{ObjectLocking: true}); err != nil {
		t.Fatal(err)
	}
	until := time.Now().Add(2 * time.Hour).UTC().Truncate(time.Second)
	body := bytes.Repeat([]byte("nightly database dump "), 10000) // erasure-coded, not inline
	comp, err := s1.PutObject(ctx, "vault", "db.dump", bytes.NewReader(body), int64(len(body)), minio.PutObjectOptions{
		Mode: minio.Compliance, RetainUntilDate: until})
	if err != nil {
		t.Fatal(err)
	}
	held, err := s1.PutObject(ctx, "vault", "case.pdf", bytes.NewReader([]byte("evidence")), 8, minio.PutObjectOptions{
		LegalHold: minio.LegalHoldEnabled})
	if err != nil {
		t.Fatal(err)
	}
	// refused checks, through one node, that nothing can remove or weaken
	// the locked versions, and that their bytes are intact.
	refused := func(n *harness.Node, when string) {
		t.Helper()
		s := client(n)
		for _, v := range []minio.UploadInfo{comp, held} {
			for _, bypass := range []bool{false, true} {
				err := s.RemoveObject(ctx, "vault", v.Key, minio.RemoveObjectOptions{VersionID: v.VersionID, GovernanceBypass: bypass})
				if code := minio.ToErrorResponse(err).Code; code != "AccessDenied" {
					t.Fatalf("%s, through %s: delete of locked %s (bypass %v): %v", when, n.Name, v.Key, bypass, err)
				}
			}
		}
		short := until.Add(-time.Hour)
		mode := minio.Compliance
		err := s.PutObjectRetention(ctx, "vault", "db.dump", minio.PutObjectRetentionOptions{VersionID: comp.VersionID, Mode: &mode, RetainUntilDate: &short})
		if code := minio.ToErrorResponse(err).Code; code != "AccessDenied" {
			t.Fatalf("%s, through %s: shortening COMPLIANCE retention: %v", when, n.Name, err)
		}
		for k, v := range map[string]minio.UploadInfo{"db.dump": comp, "case.pdf": held} {
			got, err := getBytes(ctx, s, "vault", k, minio.GetObjectOptions{VersionID: v.VersionID})
			if err != nil || (k == "db.dump" && !bytes.Equal(got, body)) || (k == "case.pdf" && string(got) != "evidence") {
				t.Fatalf("%s, through %s: the locked %s reads %d bytes (%v)", when, n.Name, k, len(got), err)
			}
		}
	}
	for _, n := range c.Nodes {
		refused(n, "at first")
	}
	// An overwrite and a plain delete only stack versions on top.
	if _, err := s1.PutObject(ctx, "vault", "db.dump", bytes.NewReader([]byte("ransom note")), 11, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s1.RemoveObject(ctx, "vault", "case.pdf", minio.RemoveObjectOptions{}); err != nil {
		t.Fatal(err)
	}

	// The leader dies; the others elect another and still refuse.
	st, err := a.Status()
	if err != nil {
		t.Fatal(err)
	}
	old := cairntest.NodeByName(c, st.Leader)
	old.Kill()
	for _, n := range c.Nodes {
		if n == old {
			continue
		}
		testutil.WaitFor(t, 30*time.Second, "a new leader seen from "+n.Name, func() error {
			st, err := a.On(n).Status()
			if err != nil || st.Leader == "" || st.Leader == old.Name {
				return fmt.Errorf("leader %q (%v)", st.Leader, err)
			}
			return nil
		})
		refused(n, "after the leader was killed")
	}
	old.Restart()
	cairntest.WaitReady(t, old)
	refused(old, "after the old leader came back")

	// Every node restarts.
	for _, n := range c.Nodes {
		n.Kill()
	}
	for _, n := range c.Nodes {
		n.Restart()
	}
	for _, n := range c.Nodes {
		cairntest.WaitReady(t, n)
	}
	cairntest.WaitShape(t, a, 3, 0)
	for _, n := range c.Nodes {
		refused(n, "after every node restarted")
	}
	// Releasing the hold is the one way that version can go.
	if err := s1.PutObjectLegalHold(ctx, "vault", "case.pdf", minio.PutObjectLegalHoldOptions{VersionID: held.VersionID, Status: ptr(minio.LegalHoldDisabled)}); err != nil {
		t.Fatal(err)
	}
	if err := s1.RemoveObject(ctx, "vault", "case.pdf", minio.RemoveObjectOptions{VersionID: held.VersionID}); err != nil {
		t.Fatalf("delete once the hold is released: %v", err)
	}
}

func ptr[T any](v T) *T { return &v }
