package ui

import (
	"context"
	"errors"
	"mime"
	"net/http"
	"net/url"
	"sort"
	"strings"

	"github.com/a-h/templ"
	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/storage"
)

// folderPageSize is how many folders and objects one page of a bucket shows.
const folderPageSize = 500

// bucketURL links a bucket's folder view at prefix ("" for the top).
func bucketURL(bucket, prefix string) templ.SafeURL {
	u := "/buckets/" + url.PathEscape(bucket)
	if prefix != "" {
		u += "?prefix=" + url.QueryEscape(prefix)
	}
	return templ.URL(u)
}

// bucketAction is where a bucket's forms post to, and the upload's target.
func bucketAction(bucket, action string) string {
	return "/buckets/" + url.PathEscape(bucket) + "/" + action
}

func downloadURL(bucket, key string) templ.SafeURL {
	return templ.URL(bucketAction(bucket, "download") + "?key=" + url.QueryEscape(key))
}

// projectNames maps the projects the viewer can see from ID to name, and
// lists those they may create buckets in (members and up), by name.
func (s *server) projectNames(v *view) (map[string]string, []identity.Project) {
	names := map[string]string{}
	var writable []identity.Project
	for _, pr := range s.projectList(v) {
		names[pr.ID] = pr.Name
		if v.p.Can(pr.ID, identity.RoleMember) {
			writable = append(writable, pr)
		}
	}
	return names, writable
}

func (s *server) bucketsData(ctx context.Context, v *view) (bucketsData, error) {
	bs, err := s.objects.ListBuckets(ctx, v.p)
	if err != nil {
		return bucketsData{}, err
	}
	names, writable := s.projectNames(v)
	d := bucketsData{Projects: writable}
	for _, b := range bs {
		name := names[b.ProjectID]
		if name == "" {
			name = b.ProjectID
		}
		d.Buckets = append(d.Buckets, bucketRow{Bucket: b, ProjectName: name, CanWrite: v.p.Can(b.ProjectID, identity.RoleMember)})
	}
	sort.Slice(d.Buckets, func(i, j int) bool { return d.Buckets[i].ID < d.Buckets[j].ID })
	if len(writable) > 0 {
		d.Form.Project = writable[0].ID
	}
	d.S3 = s.s3Access(v, d.Buckets)
	return d, nil
}

func (s *server) buckets(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "buckets"
	if s.objects == nil {
		s.storageUnavailable(w, r, v)
		return
	}
	d, err := s.bucketsData(r.Context(), v)
	if err != nil {
		s.failPage(w, r, v, err)
		return
	}
	q := r.URL.Query()
	if name := q.Get("created"); name != "" {
		v.flash = v.Tf("buckets.created", name)
	} else if name := q.Get("deleted"); name != "" {
		v.flash = v.Tf("buckets.deleted", name)
	} else if q.Get("done") == "key_revoked" {
		v.flash = v.Tf("s3.revoked", q.Get("name"))
	}
	s.render(w, r, http.StatusOK, bucketsPage(v, d))
}

// bucketsFormError shows the bucket list again with err above it.
func (s *server) bucketsFormError(w http.ResponseWriter, r *http.Request, v *view, f *bucketForm, err error) {
	s.logErr(r, err)
	switch {
	case f != nil && consensus.ErrorCode(err) == consensus.CodeAlreadyExists:
		f.NameErr = errorText(v.tr, err) // next to the name, not above
	case f != nil && bucketNameRefused(err):
		f.NameErr = v.T("buckets.name_bad") // the rule, in the reader's words
	default:
		v.err = errorText(v.tr, err)
	}
	d, lerr := s.bucketsData(r.Context(), v)
	if lerr != nil {
		s.failPage(w, r, v, lerr)
		return
	}
	if f != nil {
		d.Form = *f
	}
	s.render(w, r, formStatus, bucketsPage(v, d))
}

func (s *server) createBucket(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "buckets"
	if s.objects == nil {
		s.storageUnavailable(w, r, v)
		return
	}
	f := bucketForm{Name: strings.TrimSpace(r.PostFormValue("name")), Project: r.PostFormValue("project")}
	if _, err := s.objects.CreateBucket(r.Context(), v.p, f.Project, f.Name); err != nil {
		s.bucketsFormError(w, r, v, &f, err)
		return
	}
	s.redirect(w, r, string(bucketURL(f.Name, ""))+"?created="+url.QueryEscape(f.Name)) // the new bucket's own page
}

func (s *server) deleteBucket(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "buckets"
	if s.objects == nil {
		s.storageUnavailable(w, r, v)
		return
	}
	name := r.PathValue("bucket")
	if err := s.objects.DeleteBucket(r.Context(), v.p, name); err != nil {
		s.bucketsFormError(w, r, v, nil, err)
		return
	}
	s.redirect(w, r, "/buckets?deleted="+url.QueryEscape(name))
}

// bucketData loads one page of a bucket's folder view: the folders and
// objects directly under prefix, in key order, starting after the entry
// named by after.
func (s *server) bucketData(ctx context.Context, v *view, bucket, prefix, after string) (bucketData, error) {
	b, err := s.objects.Bucket(ctx, v.p, bucket)
	if err != nil {
		return bucketData{}, err
	}
	d := bucketData{Bucket: *b, ProjectName: b.ProjectID, CanWrite: v.p.Can(b.ProjectID, identity.RoleMember), Prefix: prefix}
	if pr, err := s.id.GetProject(v.p, b.ProjectID); err == nil {
		d.ProjectName = pr.Name
	}
	d.Crumbs = crumbs(prefix)
	startAfter := after
	if strings.HasSuffix(after, "/") && after != prefix {
		startAfter = after + "\xff" // a folder: skip every key under it
	}
	entries, lastCP := 0, ""
	for {
		page, more, err := s.objects.List(ctx, v.p, bucket, prefix, startAfter, 1000)
		if err != nil {
			return d, err
		}
		for _, o := range page {
			startAfter = o.Key
			name := o.Key[len(prefix):]
			if i := strings.IndexByte(name, '/'); i >= 0 {
				cp := o.Key[:len(prefix)+i+1]
				if cp == lastCP {
					continue
				}
				if entries == folderPageSize {
					d.Next = bucketNext(bucket, prefix, lastOf(d))
					return d, nil
				}
				lastCP = cp
				d.Folders = append(d.Folders, cp)
				entries++
				continue
			}
			if entries == folderPageSize {
				d.Next = bucketNext(bucket, prefix, lastOf(d))
				return d, nil
			}
			d.Objects = append(d.Objects, o)
			entries++
		}
		if !more {
			return d, nil
		}
		if lastCP != "" && strings.HasPrefix(startAfter, lastCP) {
			startAfter = lastCP + "\xff"
		}
	}
}

// lastOf names the last entry a page shows: the resume point of the next.
// Folders and objects interleave in key order, so it is the larger.
func lastOf(d bucketData) string {
	last := ""
	if n := len(d.Folders); n > 0 {
		last = d.Folders[n-1]
	}
	if n := len(d.Objects); n > 0 && d.Objects[n-1].Key > last {
		last = d.Objects[n-1].Key
	}
	return last
}

func bucketNext(bucket, prefix, after string) string {
	q := url.Values{"after": {after}}
	if prefix != "" {
		q.Set("prefix", prefix)
	}
	return "/buckets/" + url.PathEscape(bucket) + "?" + q.Encode()
}

// crumb is one step of the path to a folder.
type crumb struct {
	Name   string
	Prefix string
}

// crumbs splits a prefix into the folders leading to it: "a/b/" gives a/ and
// a/b/. A prefix typed by hand may end mid-name; its last step is shown as is.
func crumbs(prefix string) []crumb {
	var out []crumb
	for i := 0; i < len(prefix); {
		j := strings.IndexByte(prefix[i:], '/')
		if j < 0 {
			out = append(out, crumb{Name: prefix[i:], Prefix: prefix})
			break
		}
		out = append(out, crumb{Name: prefix[i : i+j], Prefix: prefix[:i+j+1]})
		i += j + 1
	}
	return out
}

func (s *server) bucket(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "buckets"
	if s.objects == nil {
		s.storageUnavailable(w, r, v)
		return
	}
	q := r.URL.Query()
	d, err := s.bucketData(r.Context(), v, r.PathValue("bucket"), q.Get("prefix"), q.Get("after"))
	if err != nil {
		s.failPage(w, r, v, err)
		return
	}
	if name := q.Get("created"); name != "" && name == d.Bucket.ID {
		v.flash = v.Tf("buckets.created", name)
	} else if name := q.Get("uploaded"); name != "" {
		v.flash = v.Tf("objects.uploaded", name)
	} else if name := q.Get("deleted"); name != "" {
		v.flash = v.Tf("objects.deleted", name)
	}
	s.render(w, r, http.StatusOK, bucketPage(v, d))
}

// folderOf is the folder a key is in, with its trailing "/".
func folderOf(key string) string {
	if i := strings.LastIndexByte(key, '/'); i >= 0 {
		return key[:i+1]
	}
	return ""
}

func (s *server) deleteObject(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "buckets"
	if s.objects == nil {
		s.storageUnavailable(w, r, v)
		return
	}
	bucket, key := r.PathValue("bucket"), r.PostFormValue("key")
	if err := s.objects.Delete(r.Context(), v.p, bucket, key); err != nil {
		s.logErr(r, err)
		d, lerr := s.bucketData(r.Context(), v, bucket, folderOf(key), "")
		if lerr != nil {
			s.failPage(w, r, v, lerr)
			return
		}
		v.err = errorText(v.tr, err)
		s.render(w, r, formStatus, bucketPage(v, d))
		return
	}
	s.redirect(w, r, string(bucketURL(bucket, folderOf(key)))+sep(folderOf(key))+"deleted="+url.QueryEscape(fileName(key)))
}

// sep is what joins one more parameter to a bucketURL.
func sep(prefix string) string {
	if prefix == "" {
		return "?"
	}
	return "&"
}

// objectName is how a folder view names an object: its key below the
// folder. A folder marker (a key equal to the folder) shows its full key.
func objectName(o storage.Object, prefix string) string {
	if name := o.Key[len(prefix):]; name != "" {
		return name
	}
	return o.Key
}

// folderName is a folder's last step, with its "/".
func folderName(cp, prefix string) string { return cp[len(prefix):] }

// contentType is what an uploaded file claims to be, or octet-stream when it
// claims nothing sensible.
func contentType(r *http.Request) string {
	ct := r.Header.Get("Content-Type")
	if _, _, err := mime.ParseMediaType(ct); err != nil {
		return "application/octet-stream"
	}
	return ct
}

// bucketNameRefused says whether a create was refused for breaking S3's
// rules for bucket names.
func bucketNameRefused(err error) bool {
	var e *consensus.Error
	return consensus.ErrorCode(err) == consensus.CodeInvalid && errors.As(err, &e) && strings.Contains(strings.ToLower(e.Message), "bucket name")
}
