package ui

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/cairnhq/cairn/appliance/identity"
)

// A member makes an S3 access key on the buckets page: the secret shows
// once, inside examples that name the endpoint; nobody else sees or
// revokes it; its owner revokes it with a message; the CA the examples
// trust downloads.
func TestS3KeysFromTheBucketsPage(t *testing.T) {
	e := newStorageEnv(t)
	e.admin("root", "correct horse")
	root := adminPrincipal(t, e)
	ctx := context.Background()
	for _, u := range []string{"nurse1", "nurse2"} {
		if _, err := e.svc.CreateUser(ctx, root, identity.UserSpec{Name: u, Password: "secret-pw-" + u[len(u)-1:] + "-ok"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"radiology", "finance"} {
		if _, err := e.svc.CreateProject(ctx, root, identity.ProjectSpec{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	for _, u := range []string{"nurse1", "nurse2"} {
		if err := e.svc.SetMember(ctx, root, "radiology", u, identity.RoleMember); err != nil {
			t.Fatal(err)
		}
	}
	radiology, _ := e.svc.GetProject(root, "radiology")
	finance, _ := e.svc.GetProject(root, "finance")
	b := e.browser()
	b.login("nurse1", "secret-pw-1-ok")

	p := b.get("/buckets")
	mustContain(t, p, `id="s3-endpoint">https://192.0.2.10:8447<`, `id="s3-keys-empty"`, `id="s3-key-form"`,
		`<option value="`+radiology.ID+`" selected>radiology</option>`, "export AWS_ACCESS_KEY_ID=&#39;YOUR-ACCESS-KEY&#39;",
		"aws --endpoint-url &#39;https://192.0.2.10:8447&#39; s3 ls &#39;s3://BUCKET/&#39;", "endpoint = https://192.0.2.10:8447")
	mustNotContain(t, p, ">finance</option>", `id="s3-new-key"`)

	// A project the user is not in: refused, nothing made.
	p = b.post("/s3-keys", b.formOn("/buckets", url.Values{"project": {finance.ID}}))
	if p.status != formStatus || len(e.svc.ListS3Credentials(root)) != 0 {
		t.Fatalf("a key in another project: %d, keys %v", p.status, e.svc.ListS3Credentials(root))
	}

	p = b.post("/s3-keys", b.formOn("/buckets", url.Values{"project": {radiology.ID}}))
	keys := e.svc.ListS3Credentials(root)
	if p.status != http.StatusOK || len(keys) != 1 {
		t.Fatalf("create a key: %d, keys %v", p.status, keys)
	}
	ak := keys[0].ID
	_, secret, err := e.svc.ResolveS3(ctx, ak)
	if err != nil {
		t.Fatal(err)
	}
	mustContain(t, p, `id="s3-new-key"`, "New access key for project radiology.", `id="s3-access-key">`+ak+`<`,
		`id="s3-secret-key" class="secret">`+secret.Secret+`<`, "export AWS_ACCESS_KEY_ID=&#39;"+ak+"&#39;",
		"export AWS_SECRET_ACCESS_KEY=&#39;"+secret.Secret+"&#39;", "secret_access_key = "+secret.Secret, `data-key="`+ak+`"`)
	// The secret is shown once: the page again lists the key alone.
	p = b.get("/buckets")
	mustContain(t, p, `data-key="`+ak+`"`, `action="/s3-keys/`+ak+`/revoke"`)
	mustNotContain(t, p, secret.Secret, `id="s3-new-key"`)

	// Another member neither sees nor revokes it.
	other := e.browser()
	other.login("nurse2", "secret-pw-2-ok")
	p = other.get("/buckets")
	mustNotContain(t, p, ak)
	p = other.post("/s3-keys/"+ak+"/revoke", other.formOn("/buckets", url.Values{}))
	if p.status != formStatus || !strings.Contains(p.body, "was found.") || len(e.svc.ListS3Credentials(root)) != 1 {
		t.Fatalf("someone else's key: %d, keys %v", p.status, e.svc.ListS3Credentials(root))
	}

	p = b.post("/s3-keys/"+ak+"/revoke", b.formOn("/buckets", url.Values{}))
	if p.status != http.StatusOK || p.path != "/buckets?done=key_revoked&name="+ak || len(e.svc.ListS3Credentials(root)) != 0 {
		t.Fatalf("revoke: %d at %s, keys %v", p.status, p.path, e.svc.ListS3Credentials(root))
	}
	mustContain(t, p, "Access key "+ak+" was revoked.", `id="s3-keys-empty"`)

	p = b.get("/ca.crt")
	if p.status != http.StatusOK || p.body != string(e.node.CACertPEM()) || !strings.HasPrefix(p.body, "-----BEGIN CERTIFICATE-----") {
		t.Fatalf("CA certificate: %d %q", p.status, p.body[:min(len(p.body), 60)])
	}
	if p := e.browser().get("/ca.crt"); p.status != http.StatusOK || p.body != string(e.node.CACertPEM()) {
		t.Fatalf("CA certificate without a session: %d", p.status)
	}
}
