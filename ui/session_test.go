package ui

import "testing"

// TestSafeNext keeps ?next= on this site: every way a browser can be talked
// into reading a path as another host falls back to the dashboard.
func TestSafeNext(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"/vms", "/vms"},
		{"/vms/abc/console?tab=serial", "/vms/abc/console?tab=serial"},
		{"/buckets/b%20c", "/buckets/b%20c"},
		{"", "/dashboard"},
		{"vms", "/dashboard"},
		{"//evil.com", "/dashboard"},
		{"///evil.com", "/dashboard"},
		{"/\\evil.com", "/dashboard"},
		{"\\\\evil.com", "/dashboard"},
		{"/\t/evil.com", "/dashboard"},
		{"/\n/evil.com", "/dashboard"},
		{"/\r/evil.com", "/dashboard"},
		{"/\x00/evil.com", "/dashboard"},
		{"/\u0085/evil.com", "/dashboard"},
		{"https://evil.com", "/dashboard"},
		{"https:/evil.com", "/dashboard"},
		{"javascript:alert(1)", "/dashboard"},
		{" /vms", "/dashboard"},
		{"/%2F%2Fevil.com", "/dashboard"},
		{"/%2f/evil.com", "/dashboard"},
		{"/%5Cevil.com", "/dashboard"},
		{"/%09/evil.com", "/dashboard"},
		{"/%zz", "/dashboard"},
	} {
		if got := safeNext(c.in); got != c.want {
			t.Errorf("safeNext(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
