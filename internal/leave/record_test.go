package leave

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/kubestrap/kubestrap/internal/testutil"
)

const recordIID = "i-0123456789abcdef0"

func validRecordJSON() string {
	return `{"schema":"` + RecordSchema + `","instanceId":"` + recordIID + `","node":"ip-10-0-1-5","kind":"Spot",` +
		`"noticeTime":"2026-11-29T12:00:00Z","deadline":"2026-11-29T12:01:50Z"}`
}

// A record written by NewRecord parses back the same.
func TestRecordRoundTrip(t *testing.T) {
	n := Notice{Kind: ASGTermination, NoticeTime: time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC), Action: "Terminated"}
	n.Deadline = n.NoticeTime.Add(280 * time.Second)
	r := NewRecord(recordIID, "w1", n)
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	got, err := ParseRecord(RecordKey("c", recordIID), []byte(validRecordJSON()))
	if err != nil {
		t.Fatal(err)
	}
	if got.InstanceID != recordIID || got.Kind != Spot || got.Node != "ip-10-0-1-5" {
		t.Errorf("parsed %+v", got)
	}
}

// Each hostile record differs from the valid one in one respect and is
// refused, naming what is wrong.
func TestRecordRefused(t *testing.T) {
	valid := validRecordJSON()
	key := RecordKey("c", recordIID)
	for name, tc := range map[string]struct{ key, body, want string }{
		"unknown field":     {key, strings.Replace(valid, `"kind"`, `"extra":1,"kind"`, 1), "unknown field"},
		"duplicate field":   {key, strings.Replace(valid, `"kind":"Spot"`, `"kind":"Spot","kind":"Spot"`, 1), "duplicate"},
		"case variant":      {key, strings.Replace(valid, `"node"`, `"Node"`, 1), `"Node"`},
		"other schema":      {key, strings.Replace(valid, RecordSchema, "kubestrap.dev/leave/v9", 1), "schema"},
		"bad instance ID":   {RecordKey("c", "i-XYZ"), strings.Replace(valid, recordIID, "i-XYZ", 1), "instanceId"},
		"key names another": {RecordKey("c", "i-0fedcba9876543210"), valid, "not the one its key names"},
		"rebalance":         {key, strings.Replace(valid, `"Spot"`, `"Rebalance"`, 1), "kind"},
		"no node":           {key, strings.Replace(valid, `"ip-10-0-1-5"`, `""`, 1), "node"},
		"trailing data":     {key, valid + `{}`, "leave record"},
		"too big":           {key, valid + strings.Repeat(" ", maxRecordSize), "bytes"},
		"no notice time":    {key, strings.Replace(valid, `"noticeTime":"2026-11-29T12:00:00Z",`, ``, 1), "noticeTime"},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseRecord(tc.key, []byte(tc.body)); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want one naming %q", err, tc.want)
			}
		})
	}
}

// List reads an object only when it is new or changed (its ETag): the
// control plane lists the records every pass.
func TestRecordListReadsOnlyNewOrChangedRecords(t *testing.T) {
	fake := testutil.NewFakeS3(t, "bucket")
	store := &RecordStore{Client: fake.Client, Bucket: "bucket", Cluster: "c"}
	n := Notice{Kind: Spot, NoticeTime: time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)}
	n.Deadline = n.NoticeTime.Add(110 * time.Second)
	ctx := context.Background()
	for _, id := range []string{"i-0123456789abcdef0", "i-0fedcba9876543210"} {
		if err := store.Put(ctx, NewRecord(id, "w", n)); err != nil {
			t.Fatal(err)
		}
	}
	list := func() ([]StoredRecord, int) {
		before := fake.Counts.Snapshot().Gets
		recs, err := store.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return recs, fake.Counts.Snapshot().Gets - before
	}
	recs, gets := list()
	if len(recs) != 2 || gets != 3 {
		t.Fatalf("first List: %d records, %d GETs; want 2 and 3 (the listing, each object)", len(recs), gets)
	}
	recs, gets = list()
	if len(recs) != 2 || gets != 1 || recs[0].Invalid != nil || recs[0].Record.Node != "w" {
		t.Fatalf("unchanged: %d records (%+v), %d GETs; want 2 and only the listing", len(recs), recs, gets)
	}
	if err := store.Put(ctx, NewRecord("i-0123456789abcdef0", "w-again", n)); err != nil {
		t.Fatal(err)
	}
	recs, gets = list()
	if gets != 2 || recs[0].Record.Node != "w-again" {
		t.Fatalf("one changed: %d GETs, first record of %q; want the listing and the changed object, read anew", gets, recs[0].Record.Node)
	}
}
