package rpc

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestTokenAuth(t *testing.T) {
	checkGoroutines(t)
	_, addr := startServer(t, ServerConfig{Token: "s3cret"})
	ctx := context.Background()

	// Without the token every call but shoal.auth is refused.
	plain := dial(t, addr, ClientConfig{})
	for _, method := range []string{"add", "shoal.ping", "shoal.describe"} {
		if err := plain.Call(ctx, method, nil, 1, 2); !errors.Is(err, ErrUnauthorized) {
			t.Fatalf("%s without token: got %v, want Unauthorized", method, err)
		}
	}
	if err := plain.Call(ctx, "shoal.auth", nil, "wrong"); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("wrong token: got %v", err)
	}
	if err := plain.Call(ctx, "shoal.auth", nil, "s3cret"); err != nil {
		t.Fatalf("right token: %v", err)
	}
	var sum int
	if err := plain.Call(ctx, "add", &sum, 1, 2); err != nil || sum != 3 {
		t.Fatalf("add after auth = %d, %v", sum, err)
	}

	// Dial authenticates for the caller, and reports a wrong token.
	good := dial(t, addr, ClientConfig{Token: "s3cret"})
	if err := good.Call(ctx, "add", &sum, 2, 2); err != nil || sum != 4 {
		t.Fatalf("add with token = %d, %v", sum, err)
	}
	if _, err := Dial(ctx, addr, ClientConfig{Token: "nope", Logger: quietLogger(t)}); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("Dial with wrong token: %v", err)
	}
}

// testPKI writes a CA, a server certificate for 127.0.0.1 and a client
// certificate, all signed by the CA, into a temporary directory.
type testPKI struct {
	caFile, serverCert, serverKey, clientCert, clientKey string
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "shoal test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	leaf := func(name string, serial int64, usage x509.ExtKeyUsage) (string, string) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: name},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, _ := x509.MarshalECPrivateKey(key)
		return write(name+".crt", "CERTIFICATE", der), write(name+".key", "EC PRIVATE KEY", keyDER)
	}
	p := testPKI{caFile: write("ca.crt", "CERTIFICATE", caDER)}
	p.serverCert, p.serverKey = leaf("server", 2, x509.ExtKeyUsageServerAuth)
	p.clientCert, p.clientKey = leaf("client", 3, x509.ExtKeyUsageClientAuth)
	return p
}

func TestTLS(t *testing.T) {
	checkGoroutines(t)
	pki := newTestPKI(t)
	serverTLS, err := LoadServerTLS(pki.serverCert, pki.serverKey, "")
	if err != nil {
		t.Fatal(err)
	}
	_, addr := startServer(t, ServerConfig{TLS: serverTLS})
	clientTLS, err := LoadClientTLS(pki.caFile, "", "")
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, addr, ClientConfig{TLS: clientTLS})
	var sum int
	if err := c.Call(context.Background(), "add", &sum, 5, 6); err != nil || sum != 11 {
		t.Fatalf("add over TLS = %d, %v", sum, err)
	}

	// A plain-TCP client gets nothing useful, and the server goes on.
	plain, err := Dial(context.Background(), addr, ClientConfig{Logger: quietLogger(t)})
	if err == nil {
		err = plain.Call(context.Background(), "add", nil, 1, 2)
		plain.Close()
	}
	if err == nil {
		t.Fatal("plain TCP call to a TLS server succeeded")
	}
	// A client that does not trust the server's CA is refused.
	if _, err := Dial(context.Background(), addr, ClientConfig{TLS: &tls.Config{}}); err == nil {
		t.Fatal("client without the CA trusted the server")
	}
	if err := c.Call(context.Background(), "add", &sum, 1, 1); err != nil {
		t.Fatalf("TLS server stopped serving: %v", err)
	}
}

func TestTLSClientCertificates(t *testing.T) {
	checkGoroutines(t)
	pki := newTestPKI(t)
	serverTLS, err := LoadServerTLS(pki.serverCert, pki.serverKey, pki.caFile)
	if err != nil {
		t.Fatal(err)
	}
	_, addr := startServer(t, ServerConfig{TLS: serverTLS})

	withCert, err := LoadClientTLS(pki.caFile, pki.clientCert, pki.clientKey)
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, addr, ClientConfig{TLS: withCert})
	if err := c.Call(context.Background(), "shoal.ping", nil); err != nil {
		t.Fatalf("client with certificate: %v", err)
	}

	without, _ := LoadClientTLS(pki.caFile, "", "")
	noCert, err := Dial(context.Background(), addr, ClientConfig{TLS: without, Logger: quietLogger(t)})
	if err == nil {
		// TLS 1.3 reports the refused certificate on first use.
		err = noCert.Call(context.Background(), "shoal.ping", nil)
		noCert.Close()
	}
	if err == nil {
		t.Fatal("client without a certificate was served")
	}
}

func TestLoadTLSErrors(t *testing.T) {
	if _, err := LoadServerTLS("/nonexistent.crt", "/nonexistent.key", ""); err == nil {
		t.Error("missing key pair accepted")
	}
	empty := filepath.Join(t.TempDir(), "empty.pem")
	os.WriteFile(empty, []byte("not pem"), 0o600)
	if _, err := LoadClientTLS(empty, "", ""); err == nil {
		t.Error("CA file without certificates accepted")
	}
}
