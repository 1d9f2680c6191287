package ui

import (
	"net/http"
	"net/url"
	"sort"
	"strings"
)

// S3 access from the buckets page: the endpoint, the caller's access keys
// (all of them for cluster admins, as the API lists them), and examples for
// awscli and rclone that work as pasted, with the new key filled in.

func s3KeyAction(key string) string { return "/s3-keys/" + url.PathEscape(key) + "/revoke" }

// s3Access gathers the S3 card of the buckets page.
func (s *server) s3Access(v *view, buckets []bucketRow) s3Access {
	a := s3Access{Endpoint: s.s3URL, Projects: s.projectList(v), Bucket: "BUCKET"}
	if len(buckets) > 0 {
		a.Bucket = buckets[0].ID
	}
	if len(a.Projects) > 0 {
		a.Project = a.Projects[0].ID
	}
	names := map[string]string{}
	for _, p := range a.Projects {
		names[p.ID] = p.Name
	}
	users := map[string]string{}
	if v.p.IsClusterAdmin() {
		for _, u := range s.id.ListUsers(v.p) {
			users[u.ID] = u.Name
		}
	}
	for _, c := range s.id.ListS3Credentials(v.p) {
		row := s3KeyRow{S3Credential: c, ProjectName: names[c.ProjectID], Owner: users[c.UserID]}
		if row.ProjectName == "" {
			row.ProjectName = c.ProjectID
		}
		a.Keys = append(a.Keys, row)
	}
	sort.Slice(a.Keys, func(i, j int) bool {
		if !a.Keys[i].CreatedAt.Equal(a.Keys[j].CreatedAt) {
			return a.Keys[i].CreatedAt.After(a.Keys[j].CreatedAt)
		}
		return a.Keys[i].ID < a.Keys[j].ID
	})
	return a
}

// The examples name the new key, or placeholders until there is one. The
// secret appears in them only on the page that created it.
func (a s3Access) keys() (ak, sk string) {
	if a.New != nil {
		return a.New.ID, a.New.Secret
	}
	return "YOUR-ACCESS-KEY", "YOUR-SECRET-KEY"
}

func (a s3Access) awsExample() string {
	ak, sk := a.keys()
	return strings.Join([]string{
		"export AWS_ACCESS_KEY_ID=" + shellQuote(ak),
		"export AWS_SECRET_ACCESS_KEY=" + shellQuote(sk),
		"export AWS_DEFAULT_REGION=us-east-1",
		`export AWS_CA_BUNDLE="$PWD/cairn-ca.crt"`,
		"aws --endpoint-url " + shellQuote(a.Endpoint) + " s3 ls " + shellQuote("s3://"+a.Bucket+"/"),
	}, "\n")
}

// rcloneExample writes the remote's configuration, secret included, where
// only its owner can read it.
func (a s3Access) rcloneExample() string {
	ak, sk := a.keys()
	return strings.Join([]string{
		"(umask 077; cat > cairn-rclone.conf <<'END'",
		"[cairn]",
		"type = s3",
		"provider = Other",
		"access_key_id = " + ak,
		"secret_access_key = " + sk,
		"endpoint = " + a.Endpoint,
		"region = us-east-1",
		"force_path_style = true",
		"END",
		")",
		"env -u AWS_CA_BUNDLE rclone --config cairn-rclone.conf --ca-cert cairn-ca.crt ls " + shellQuote("cairn:"+a.Bucket),
	}, "\n")
}

// shellQuote quotes s for a POSIX shell: an IPv6 endpoint's brackets are
// a pattern to some shells.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// createS3Key issues a key and shows the buckets page with its secret, once:
// no redirect, so the secret is in this response only.
func (s *server) createS3Key(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "buckets"
	if s.objects == nil {
		s.storageUnavailable(w, r, v)
		return
	}
	project := r.PostFormValue("project")
	c, err := s.id.CreateS3Credential(r.Context(), v.p, project)
	if err != nil {
		s.bucketsFormError(w, r, v, nil, err)
		return
	}
	d, err := s.bucketsData(r.Context(), v)
	if err != nil {
		s.failPage(w, r, v, err)
		return
	}
	d.S3.New, d.S3.NewIn, d.S3.Project = c, c.ProjectID, c.ProjectID
	for _, b := range d.Buckets { // the examples list a bucket the key opens
		if b.ProjectID == c.ProjectID {
			d.S3.Bucket = b.ID
			break
		}
	}
	if pr, err := s.id.GetProject(v.p, c.ProjectID); err == nil {
		d.S3.NewIn = pr.Name
	}
	s.render(w, r, http.StatusOK, bucketsPage(v, d))
}

func (s *server) revokeS3Key(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "buckets"
	if s.objects == nil {
		s.storageUnavailable(w, r, v)
		return
	}
	key := r.PathValue("key")
	if err := s.id.DeleteS3Credential(r.Context(), v.p, key); err != nil {
		s.bucketsFormError(w, r, v, nil, err)
		return
	}
	s.redirect(w, r, "/buckets?done=key_revoked&name="+url.QueryEscape(key))
}

// caCert serves the cluster's CA certificate, which S3 clients and the CLI
// need to trust the appliance. It is public (it is in every TLS handshake
// of the appliance anyway), so no sign-in is asked.
func (s *server) caCert(w http.ResponseWriter, r *http.Request) {
	if s.ca == nil {
		http.NotFound(w, r)
		return
	}
	pem := s.ca()
	if len(pem) == 0 {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/x-pem-file")
	w.Header().Set("Content-Disposition", `attachment; filename="cairn-ca.crt"`)
	_, _ = w.Write(pem)
}
