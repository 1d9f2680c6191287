package browser_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/chromedp/chromedp"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// s3KeysInBrowser: on the buckets page, the user makes an S3 access key for
// the project, copies the examples as the page shows them, and runs them
// as pasted (awscli, rclone), with the certificate the page links; minio-go
// reads the uploaded file with the key. Revoked from the page, the key no
// longer opens anything.
func s3KeysInBrowser(t *testing.T, ctx context.Context, base, project, bucket, key string, data []byte) {
	if err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/buckets"),
		chromedp.WaitVisible(chromedp.CSS("#s3-key-form")),
		chromedp.SetValue(chromedp.CSS("#s3-key-project"), project),
		chromedp.Click(chromedp.CSS("#s3-key-submit")),
		chromedp.WaitVisible(chromedp.CSS("#s3-secret-key")),
	); err != nil {
		screenshot(t, ctx, "s3-key-failed")
		t.Fatalf("create an S3 key: %v", err)
	}
	screenshot(t, ctx, "s3-key")
	actionsCellsFillRows(t, ctx)
	read := func(id string) string {
		s, err := textOf(ctx, "#"+id)
		if err != nil {
			t.Fatalf("read #%s: %v", id, err)
		}
		return strings.TrimSpace(s)
	}
	ak, sk, endpoint := read("s3-access-key"), read("s3-secret-key"), read("s3-endpoint")
	aws, rclone := read("s3-example-aws"), read("s3-example-rclone")
	if ak == "" || sk == "" || !strings.Contains(aws, sk) || !strings.Contains(rclone, sk) || !strings.Contains(aws, "s3://"+bucket+"/") {
		t.Fatalf("the page shows key %q, secret %q, examples:\n%s\n%s", ak, sk, aws, rclone)
	}
	dir := t.TempDir()
	ca, err := chromedp.Run(ctx, chromedp.Evaluate[string](`fetch(document.getElementById("s3-ca").href).then(r => r.text())`, chromedp.EvalAwaitPromise))
	if err != nil || !strings.HasPrefix(ca, "-----BEGIN CERTIFICATE-----") {
		t.Fatalf("the page's CA link gave %q, %v", ca[:min(len(ca), 60)], err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cairn-ca.crt"), []byte(ca), 0o600); err != nil {
		t.Fatal(err)
	}
	// The examples as pasted into a shell, in a clean home.
	for name, script := range map[string]string{"awscli": aws, "rclone": rclone} {
		cmd := exec.Command("/bin/sh", "-ec", script)
		cmd.Dir = dir
		cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + dir, "PWD=" + dir, "LC_ALL=C.UTF-8", "AWS_PAGER=", "AWS_CA_BUNDLE=/nonexistent"}
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), key) || !strings.Contains(string(out), fmt.Sprint(len(data))) {
			t.Fatalf("the page's %s example: %v\n%s\n--- its output:\n%s", name, err, script, out)
		}
		t.Logf("the page's %s example lists: %s", name, strings.TrimSpace(string(out)))
	}
	if fi, err := os.Stat(filepath.Join(dir, "cairn-rclone.conf")); err != nil {
		t.Fatal(err)
	} else if fi.Mode().Perm()&0o077 != 0 {
		t.Fatalf("the rclone configuration, with the secret, is %v", fi.Mode())
	}

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(ca))
	s3c, err := minio.New(strings.TrimPrefix(endpoint, "https://"), &minio.Options{
		Creds: credentials.NewStaticV4(ak, sk, ""), Secure: true, Region: "us-east-1", BucketLookup: minio.BucketLookupPath,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	})
	if err != nil {
		t.Fatal(err)
	}
	get := func() ([]byte, error) {
		o, err := s3c.GetObject(context.Background(), bucket, key, minio.GetObjectOptions{})
		if err != nil {
			return nil, err
		}
		defer o.Close()
		return io.ReadAll(o)
	}
	if got, err := get(); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("minio-go with the page's key: %d bytes (want %d), %v", len(got), len(data), err)
	}

	// Revoke it from the page, confirming; the confirmation names it.
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.confirmed = "", window.confirm = m => (window.confirmed = m, true), true`)); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`tr.s3-key[data-key="`+ak+`"] button[data-do="revoke-key"]`)),
		chromedp.WaitVisible(chromedp.CSS("#s3-keys-empty")),
	); err != nil {
		screenshot(t, ctx, "s3-revoke-failed")
		t.Fatalf("revoke the key: %v", err)
	}
	if asked, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`window.confirmed || ""`)); !strings.Contains(asked, ak) {
		t.Errorf("the confirmation asked %q", asked)
	}
	testutil.WaitFor(t, 10*time.Second, "the revoked key refused", func() error {
		if _, err := get(); err == nil {
			return fmt.Errorf("still reads %s", key)
		} else if code := minio.ToErrorResponse(err).Code; code != "InvalidAccessKeyId" {
			return fmt.Errorf("refused with %q (%v), want InvalidAccessKeyId", code, err)
		}
		return nil
	})
}
