// Package cli is the `cairn <noun> <verb>` command-line client of the API.
package cli

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Settings are where and as whom the CLI talks to the API. They come from
// flags, then the environment, then the file `cairn login` writes.
type Settings struct {
	Endpoint string `json:"endpoint"`
	Token    string `json:"token,omitempty"`
	CACert   string `json:"ca_cert,omitempty"`
}

// configPath is $CAIRN_CONFIG or ~/.config/cairn/config.json.
func configPath() string {
	if p := os.Getenv("CAIRN_CONFIG"); p != "" {
		return p
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		dir = "."
	}
	return filepath.Join(dir, "cairn", "config.json")
}

func loadSaved() Settings {
	var s Settings
	if b, err := os.ReadFile(configPath()); err == nil {
		_ = json.Unmarshal(b, &s)
	}
	return s
}

func (s Settings) save() error {
	p := configPath()
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(s, "", "  ")
	return os.WriteFile(p, append(b, '\n'), 0o600)
}

// resolve fills empty settings from the environment, then the saved file.
func (s Settings) resolve() Settings {
	saved := loadSaved()
	pick := func(flag, env, file string) string {
		if flag != "" {
			return flag
		}
		if v := os.Getenv(env); v != "" {
			return v
		}
		return file
	}
	return Settings{
		Endpoint: pick(s.Endpoint, "CAIRN_ENDPOINT", saved.Endpoint),
		Token:    pick(s.Token, "CAIRN_TOKEN", saved.Token),
		CACert:   pick(s.CACert, "CAIRN_CA_CERT", saved.CACert),
	}
}

// client calls the API.
type client struct {
	base  string
	token string
	http  *http.Client
}

func newClient(s Settings) (*client, error) {
	if s.Endpoint == "" {
		return nil, errors.New("no endpoint: pass --endpoint, set CAIRN_ENDPOINT or run cairn login")
	}
	u, err := url.Parse(s.Endpoint)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("bad endpoint %q", s.Endpoint)
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if s.CACert != "" {
		pem, err := os.ReadFile(s.CACert)
		if err != nil {
			return nil, fmt.Errorf("read CA certificate: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("no certificate in %s", s.CACert)
		}
		tlsCfg.RootCAs = pool
	}
	return &client{
		base:  strings.TrimRight(u.Scheme+"://"+u.Host, "/"),
		token: s.Token,
		http:  &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg}},
	}, nil
}

// apiError is the API's error body.
type apiError struct {
	Status  int
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%s (%s, HTTP %d)", e.Message, e.Code, e.Status)
}

// do sends a request and decodes the JSON answer into out (may be nil).
func (c *client) do(method, path string, in, out any, header ...string) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	ctype := ""
	if in != nil {
		ctype = "application/json"
	}
	return c.send(c.http, method, path, body, ctype, out, header...)
}

// uploadFile streams the file at path to the API path, decoding the
// answer into out.
func uploadFile(e *env, path, apiPath string, out any) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	return c.upload(apiPath, f, st.Size(), out)
}

// upload streams a file as the request body, with no overall time limit:
// an image of many GiB takes as long as it takes.
func (c *client) upload(path string, body io.Reader, size int64, out any) error {
	hc := *c.http
	hc.Timeout = 0
	return c.send(&hc, "POST", path, sized{body, size}, "application/octet-stream", out)
}

// sized lets net/http send a Content-Length for a stream.
type sized struct {
	io.Reader
	n int64
}

func (c *client) send(hc *http.Client, method, path string, body io.Reader, ctype string, out any, header ...string) error {
	req, err := http.NewRequest(method, c.base+path, body)
	if err != nil {
		return err
	}
	if s, ok := body.(sized); ok {
		req.Body, req.ContentLength = io.NopCloser(s.Reader), s.n
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode >= 400 {
		ae := &apiError{Status: res.StatusCode}
		if err := json.NewDecoder(res.Body).Decode(ae); err != nil || ae.Code == "" {
			ae.Code, ae.Message = "http_error", res.Status
		}
		return ae
	}
	if out == nil || res.StatusCode == http.StatusNoContent {
		return nil
	}
	if w, ok := out.(io.Writer); ok {
		n, err := io.Copy(w, res.Body)
		if err == nil && res.ContentLength >= 0 && n != res.ContentLength {
			err = fmt.Errorf("received %d of %d bytes", n, res.ContentLength)
		}
		return err
	}
	return json.NewDecoder(res.Body).Decode(out)
}

// download writes a GET's body to w, however long it takes.
func (c *client) download(path string, w io.Writer) error {
	hc := *c.http
	hc.Timeout = 0
	return c.send(&hc, "GET", path, nil, "", w)
}
