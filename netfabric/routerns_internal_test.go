package netfabric

import (
	"fmt"
	"testing"
)

// The router's neighbours: ports' own addresses, and a pair address only
// when every port that claims it names the same MAC (VRRP with a virtual
// MAC); one claimed with different MACs is left out, and a port's own
// address is never taken over by another port's pair.
func TestRouterNeighbours(t *testing.T) {
	vmac := "00:00:5e:00:01:07"
	ports := []Port{
		{ID: "a", IP: "10.2.0.10", MAC: "02:00:00:00:00:0a", AddressPairs: []AddressPair{{IP: "10.2.0.50", MAC: "00:00:5E:00:01:07"}, {IP: "10.2.0.60"}, {IP: "10.2.0.11"}}},
		{ID: "b", IP: "10.2.0.11", MAC: "02:00:00:00:00:0b", AddressPairs: []AddressPair{{IP: "10.2.0.50", MAC: vmac}, {IP: "10.2.0.60"}, {IP: "10.2.0.70"}}},
	}
	got := routerNeighbours(ports)
	want := map[string]string{"10.2.0.10": "02:00:00:00:00:0a", "10.2.0.11": "02:00:00:00:00:0b", "10.2.0.50": vmac, "10.2.0.70": "02:00:00:00:00:0b"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("neighbours %v, want %v", got, want)
	}
}
