package logging

import (
	"bytes"
	"strings"
	"testing"

	"github.com/coreos/go-systemd/v22/journal"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func TestFieldName(t *testing.T) {
	for in, want := range map[string]string{"tokenID": "TOKEN_ID", "node": "NODE", "generation": "GENERATION",
		"expectedETag": "EXPECTED_ETAG", "retryIn": "RETRY_IN", "message": "F_MESSAGE", "_private": "PRIVATE", "bad key!": ""} {
		if got := FieldName(in); got != want {
			t.Errorf("FieldName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestJournalCoreSendsNativeFields(t *testing.T) {
	type entry struct {
		msg  string
		prio journal.Priority
		vars map[string]string
	}
	var got []entry
	log, err := New(Options{Format: "journal", Level: zapcore.InfoLevel, JournalSend: func(m string, p journal.Priority, v map[string]string) error {
		got = append(got, entry{m, p, v})
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	log.With(zap.String("node", "ip-10-0-2-7")).Warn("refusing join info", zap.String("tokenID", "abcdef"), zap.Int64("generation", 7))
	log.Debug("not at info level")
	if len(got) != 1 {
		t.Fatalf("%d entries, want 1", len(got))
	}
	e := got[0]
	if e.msg != "refusing join info" || e.prio != journal.PriWarning || e.vars["TOKEN_ID"] != "abcdef" ||
		e.vars["GENERATION"] != "7" || e.vars["NODE"] != "ip-10-0-2-7" || e.vars["SYSLOG_IDENTIFIER"] != "kubestrap" {
		t.Errorf("entry = %+v", e)
	}
}

func TestConsoleWhenNotJournal(t *testing.T) {
	var buf bytes.Buffer
	t.Setenv("JOURNAL_STREAM", "")
	log, err := New(Options{Format: "auto", Writer: &buf})
	if err != nil {
		t.Fatal(err)
	}
	log.Info("hello", zap.String("node", "n1"))
	if !strings.Contains(buf.String(), "hello") || !strings.Contains(buf.String(), `"node": "n1"`) {
		t.Errorf("console output = %q", buf.String())
	}
	if _, err := New(Options{Format: "xml"}); err == nil {
		t.Error("unknown format accepted")
	}
}
