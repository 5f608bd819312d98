package join_test

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	. "github.com/kubestrap/kubestrap/internal/join"
	"github.com/kubestrap/kubestrap/internal/join/jointest"
)

func TestParseControlPlaneAcceptsValidInfo(t *testing.T) {
	info, err := ParseControlPlane(jointest.MustJSON(jointest.ValidControlPlaneDoc()), expect())
	if err != nil {
		t.Fatalf("valid control-plane join info refused: %v", err)
	}
	if info.APIServerEndpoint != "api.demo.internal:6443" || info.CertificateKey != jointest.CertificateKey {
		t.Errorf("parsed %v", info)
	}
	wantCerts := jointest.Now.Add(-time.Minute).Add(2 * time.Hour)
	if !info.CertificatesExpireAt().Equal(wantCerts) || !info.UsableUntil().Equal(wantCerts) {
		t.Errorf("certificates expire %s, usable until %s; want both %s", info.CertificatesExpireAt(), info.UsableUntil(), wantCerts)
	}
	// A token that expires before the certificates bounds the document instead.
	short, err := ParseControlPlane(jointest.CPWith("expiresAt", jointest.Now.Add(time.Hour).Format(time.RFC3339)), expect())
	if err != nil || !short.UsableUntil().Equal(jointest.Now.Add(time.Hour)) {
		t.Errorf("short token: %v, %v", short, err)
	}
	// Worker join info is not control-plane join info, nor the other way round.
	if _, err := ParseControlPlane(jointest.MustJSON(jointest.ValidDoc()), expect()); err == nil {
		t.Errorf("worker join info accepted as control-plane join info")
	}
	if _, err := Parse(jointest.MustJSON(jointest.ValidControlPlaneDoc()), expect()); err == nil {
		t.Errorf("control-plane join info accepted as worker join info")
	}
	if got := ControlPlaneKey("demo"); got != "demo/cp/join.json" {
		t.Errorf("ControlPlaneKey = %q", got)
	}
}

func TestParseControlPlaneRefusesHostileInfo(t *testing.T) {
	cases := jointest.ControlPlaneHostileCases()
	if len(cases) < 40 {
		t.Fatalf("want at least 40 hostile cases, have %d", len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			info, err := ParseControlPlane(tc.Body, expect())
			if err == nil {
				t.Fatalf("accepted: %v", info)
			}
			if !IsRejection(err) {
				t.Fatalf("error is not a rejection: %v", err)
			}
			r := err.(*Rejection)
			if r.Field != tc.Field {
				t.Errorf("rejection names field %q, want %q (%v)", r.Field, tc.Field, err)
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.Reason) {
				t.Errorf("rejection %q does not say %q", msg, tc.Reason)
			}
			for _, secret := range jointest.SecretFragments {
				if strings.Contains(msg, secret) {
					t.Errorf("rejection leaks a secret (%s): %q", secret, msg)
				}
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("rejection has a raw newline: %q", msg)
			}
		})
	}
}

func TestControlPlaneInfoNeverPrintsSecrets(t *testing.T) {
	info, err := ParseControlPlane(jointest.MustJSON(jointest.ValidControlPlaneDoc()), expect())
	if err != nil {
		t.Fatal(err)
	}
	var logged bytes.Buffer
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	logger := zap.New(zapcore.NewCore(enc, zapcore.AddSync(&logged), zap.DebugLevel))
	logger.Info("published", zap.Any("info", info), zap.Object("object", info), zap.Stringer("stringer", info))
	_ = logger.Sync()
	outputs := map[string]string{
		"String": info.String(), "%v": fmt.Sprintf("%v", info), "%+v": fmt.Sprintf("%+v", info), "%#v": fmt.Sprintf("%#v", info),
		"%s": fmt.Sprintf("info %s", info), "error wrap": fmt.Errorf("publish %v: failed", info).Error(), "zap": logged.String(),
	}
	for name, out := range outputs {
		for _, secret := range jointest.SecretFragments {
			if strings.Contains(out, secret) {
				t.Errorf("%s leaks a secret (%s): %s", name, secret, out)
			}
		}
		if !strings.Contains(out, "abcdef") || !strings.Contains(out, "demo") {
			t.Errorf("%s does not name the token ID and cluster: %s", name, out)
		}
	}
}

func TestNewCertificateKey(t *testing.T) {
	seen := map[string]bool{}
	for range 32 {
		key, err := NewCertificateKey()
		if err != nil {
			t.Fatal(err)
		}
		raw, err := hex.DecodeString(key)
		if err != nil || len(raw) != CertificateKeyBytes || !ValidCertificateKey(key) {
			t.Fatalf("key %d hex digits, decodes to %d bytes (%v), valid %v", len(key), len(raw), err, ValidCertificateKey(key))
		}
		if seen[key] {
			t.Fatalf("the same key twice")
		}
		seen[key] = true
	}
}

func FuzzControlPlaneParse(f *testing.F) {
	f.Add(jointest.MustJSON(jointest.ValidControlPlaneDoc()))
	for _, tc := range jointest.ControlPlaneHostileCases() {
		if len(tc.Body) < 4096 {
			f.Add(tc.Body)
		}
	}
	want := expect()
	f.Fuzz(func(t *testing.T, data []byte) {
		info, err := ParseControlPlane(data, want)
		if err != nil {
			if !IsRejection(err) {
				t.Fatalf("non-rejection error: %v", err)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("rejection with a raw newline: %q", err)
			}
			return
		}
		if verr := info.Validate(want); verr != nil {
			t.Fatalf("accepted info fails validation: %v", verr)
		}
		if !ValidCertificateKey(info.CertificateKey) || strings.Contains(info.String(), info.CertificateKey) {
			t.Fatalf("accepted a bad key, or String shows it")
		}
	})
}
