package bootstraptoken

import "testing"

func TestValidAndID(t *testing.T) {
	for token, id := range map[string]string{
		"abcdef.0123456789abcdef":   "abcdef",
		"ABCDEF.0123456789abcdef":   "",
		"abcdef.0123456789abcde":    "",
		"abcdef-0123456789abcdef":   "",
		" abcdef.0123456789abcdef":  "",
		"abcdef.0123456789abcdef\n": "",
	} {
		if got := ID(token); got != id {
			t.Errorf("ID(%q) = %q, want %q", token, got, id)
		}
		if Valid(token) != (id != "") {
			t.Errorf("Valid(%q) = %v", token, Valid(token))
		}
	}
}

func TestRedactKeepsTheIDOnly(t *testing.T) {
	in := `kubeadm join --token abcdef.0123456789abcdef x "q3x9zz.zzzzzzzzzzzzzzzz"`
	want := `kubeadm join --token abcdef.<redacted> x "q3x9zz.<redacted>"`
	if got := Redact(in); got != want {
		t.Errorf("Redact = %q, want %q", got, want)
	}
}
