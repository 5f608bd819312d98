// Package logging builds the agent's zap logger: native journald entries
// (PRIORITY, MESSAGE and one field per structured value, such as TOKEN_ID)
// when stderr is connected to the journal, console or JSON lines otherwise.
package logging

import (
	"fmt"
	"io"
	"os"
	"strings"
	"unicode"

	"github.com/coreos/go-systemd/v22/journal"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Options choose the logger's output.
type Options struct {
	// Format is "auto" (journal when JOURNAL_STREAM matches stderr, else
	// console), "journal", "console" or "json".
	Format string
	Level  zapcore.Level
	// Writer receives console and JSON output (default: stderr).
	Writer io.Writer
	// JournalSend delivers one journal entry (default: journal.Send).
	JournalSend func(message string, priority journal.Priority, vars map[string]string) error
}

// New returns a logger for opts.
func New(opts Options) (*zap.Logger, error) {
	w := opts.Writer
	if w == nil {
		w = os.Stderr
	}
	format := opts.Format
	if format == "" || format == "auto" {
		format = "console"
		if ok, err := journal.StderrIsJournalStream(); err == nil && ok {
			format = "journal"
		}
	}
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	var core zapcore.Core
	switch format {
	case "journal":
		send := opts.JournalSend
		if send == nil {
			send = journal.Send
		}
		core = &journalCore{LevelEnabler: opts.Level, send: send}
	case "console":
		encCfg.EncodeLevel = zapcore.CapitalLevelEncoder
		core = zapcore.NewCore(zapcore.NewConsoleEncoder(encCfg), zapcore.AddSync(w), opts.Level)
	case "json":
		core = zapcore.NewCore(zapcore.NewJSONEncoder(encCfg), zapcore.AddSync(w), opts.Level)
	default:
		return nil, fmt.Errorf("unknown log format %q: use auto, journal, console or json", opts.Format)
	}
	return zap.New(core), nil
}

// journalCore writes each entry as one native journal record.
type journalCore struct {
	zapcore.LevelEnabler
	fields []zapcore.Field
	send   func(string, journal.Priority, map[string]string) error
}

func (c *journalCore) With(fields []zapcore.Field) zapcore.Core {
	clone := *c
	clone.fields = append(append([]zapcore.Field(nil), c.fields...), fields...)
	return &clone
}

func (c *journalCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *journalCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range c.fields {
		f.AddTo(enc)
	}
	for _, f := range fields {
		f.AddTo(enc)
	}
	vars := make(map[string]string, len(enc.Fields)+2)
	for k, v := range enc.Fields {
		name := FieldName(k)
		if name == "" {
			continue
		}
		vars[name] = fmt.Sprint(v)
	}
	vars["SYSLOG_IDENTIFIER"] = "kubestrap"
	if e.LoggerName != "" {
		vars["LOGGER"] = e.LoggerName
	}
	return c.send(e.Message, Priority(e.Level), vars)
}

func (c *journalCore) Sync() error { return nil }

// Priority maps a zap level to a syslog priority.
func Priority(l zapcore.Level) journal.Priority {
	switch l {
	case zapcore.DebugLevel:
		return journal.PriDebug
	case zapcore.InfoLevel:
		return journal.PriInfo
	case zapcore.WarnLevel:
		return journal.PriWarning
	case zapcore.ErrorLevel:
		return journal.PriErr
	case zapcore.DPanicLevel, zapcore.PanicLevel:
		return journal.PriCrit
	default:
		return journal.PriAlert
	}
}

// FieldName turns a zap key such as "tokenID" or "node" into a journal field
// name (TOKEN_ID, NODE); keys that cannot be mapped yield "".
func FieldName(key string) string {
	var b strings.Builder
	prevLower := false
	for _, r := range key {
		switch {
		case unicode.IsUpper(r):
			if prevLower {
				b.WriteByte('_')
			}
			b.WriteRune(r)
			prevLower = false
		case unicode.IsLower(r) || unicode.IsDigit(r):
			b.WriteRune(unicode.ToUpper(r))
			prevLower = true
		case r == '_' || r == '-' || r == '.':
			b.WriteByte('_')
			prevLower = false
		default:
			return ""
		}
	}
	name := strings.TrimLeft(b.String(), "_0123456789")
	if name == "" || len(name) > 64 {
		return ""
	}
	switch name {
	case "MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER":
		return "F_" + name
	}
	return name
}
