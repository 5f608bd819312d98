// Package bootstraptoken is the one definition of a kubeadm bootstrap token
// ("id.secret") in kubestrap: recognising one, its public ID, and hiding its
// secret in text that goes to a log, STATUS or an error message.
package bootstraptoken

import (
	"regexp"

	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
)

var (
	// exact is the token format as Kubernetes defines it.
	exact = regexp.MustCompile(bootstrapapi.BootstrapTokenPattern)
	// inText finds tokens inside longer text, also glued to other
	// characters: hiding too much is safe, hiding too little is not.
	inText = regexp.MustCompile(`([a-z0-9]{6})\.[a-z0-9]{16}`)
)

// Valid reports whether s is a bootstrap token "[a-z0-9]{6}.[a-z0-9]{16}".
func Valid(s string) bool { return exact.MatchString(s) }

// ID returns the public half of token, or "" when token is not valid.
func ID(token string) string {
	if !Valid(token) {
		return ""
	}
	return token[:6]
}

// Redact replaces the secret of every token in s with "<redacted>", keeping
// the ID so that the text stays useful.
func Redact(s string) string { return inText.ReplaceAllString(s, "$1.<redacted>") }
