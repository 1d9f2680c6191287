package s3

import (
	"bufio"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// aws s3api put-object --checksum-algorithm CRC32 (awscli 2.9, botocore)
// streams its aws-chunked body with Transfer-Encoding: chunked and no
// Content-Length, and signs transfer-encoding. Go's server moves that
// header out of the header map, so the signature never matched: the
// gateway refused the upload before reading it and awscli saw the
// connection cut mid-body.
func TestSigV4SignedTransferEncoding(t *testing.T) {
	data := []byte(strings.Repeat("botocore streams this\n", 1000))
	body := encodeChunked(nil, data, 8192, []string{"x-amz-checksum-crc32:" + checksumOf("CRC32", data)})

	// The request as botocore builds and signs it.
	client, _ := http.NewRequest("PUT", "https://s3.example.com/examplebucket/streamed", nil)
	client.Header.Set("Content-Encoding", "aws-chunked")
	client.Header.Set("Transfer-Encoding", "chunked") // for the wire below
	client.TransferEncoding = []string{"chunked"}     // as a Go client holds it
	client.Header.Set("X-Amz-Content-Sha256", streamingUnsignedTrailer)
	client.Header.Set("X-Amz-Trailer", "x-amz-checksum-crc32")
	client.Header.Set("X-Amz-Decoded-Content-Length", fmt.Sprint(len(data)))
	client.Header.Set("X-Amz-Sdk-Checksum-Algorithm", "CRC32")
	client.Header.Set("X-Amz-Date", "20130524T000000Z")
	auth := "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=content-encoding;host;transfer-encoding;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-sdk-checksum-algorithm;x-amz-trailer, Signature="
	client.Header.Set("Authorization", auth+strings.Repeat("0", 64))
	client.Header.Set("Authorization", auth+mustParseV4(t, client).compute(client, exampleSecret))

	// On the wire, framed by HTTP chunks, and read back as a server reads it.
	var wire strings.Builder
	wire.WriteString("PUT /examplebucket/streamed HTTP/1.1\r\nHost: s3.example.com\r\n")
	_ = client.Header.Write(&wire)
	wire.WriteString("\r\n")
	for rest := body; rest != ""; {
		n := min(len(rest), 5000)
		fmt.Fprintf(&wire, "%x\r\n%s\r\n", n, rest[:n])
		rest = rest[n:]
	}
	wire.WriteString("0\r\n\r\n")
	r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(wire.String())))
	if err != nil {
		t.Fatal(err)
	}
	if r.Header.Get("Transfer-Encoding") != "" || len(r.TransferEncoding) != 1 {
		t.Fatalf("the server-side request keeps Transfer-Encoding in its headers: %v %v", r.Header, r.TransferEncoding)
	}
	p := verified(t, r)
	got, err := drain(p, r)
	if err != nil || string(got) != string(data) {
		t.Fatalf("the body: %d bytes of %d, %v", len(got), len(data), err)
	}
}
