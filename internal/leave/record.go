package leave

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	sigsjson "sigs.k8s.io/json"

	"github.com/kubestrap/kubestrap/internal/lease"
)

// RecordSchema names the leave record's format.
const RecordSchema = "kubestrap.dev/leave/v1alpha1"

// maxRecordSize bounds a leave record read from S3.
const maxRecordSize = 4 << 10

// maxRecords bounds how many leave records one List reads.
const maxRecords = 1000

// Record is a leave record: a worker that got a terminating notice writes
// one to s3://<bucket>/<cluster>/leave/<instance-id>.json, so the control
// plane's node cleanup looks at that instance at once. It is a hint, not an
// order: the control plane deletes the Node only after EC2 confirms that the
// instance is shutting down, terminated or gone.
type Record struct {
	Schema     string    `json:"schema"`
	InstanceID string    `json:"instanceId"`
	Node       string    `json:"node"`
	Kind       Kind      `json:"kind"`
	NoticeTime time.Time `json:"noticeTime"`
	Deadline   time.Time `json:"deadline"`
}

// RecordPrefix is the S3 key prefix of a cluster's leave records.
func RecordPrefix(cluster string) string { return cluster + "/leave/" }

// RecordKey is the S3 key of the leave record of instanceID.
func RecordKey(cluster, instanceID string) string {
	return RecordPrefix(cluster) + instanceID + ".json"
}

// NewRecord is the leave record of notice n on node (instance instanceID).
func NewRecord(instanceID, node string, n Notice) Record {
	return Record{Schema: RecordSchema, InstanceID: instanceID, Node: node, Kind: n.Kind,
		NoticeTime: n.NoticeTime.UTC(), Deadline: n.Deadline.UTC()}
}

// Validate says what is wrong with a record, or nil.
func (r Record) Validate() error {
	switch {
	case r.Schema != RecordSchema:
		return fmt.Errorf("schema %q, want %q", r.Schema, RecordSchema)
	case !lease.ValidHolder(r.InstanceID):
		return fmt.Errorf("instanceId %q is not an EC2 instance ID", r.InstanceID)
	case r.Node == "" || len(r.Node) > 253:
		return errors.New("node must be a Node name of 1 to 253 characters")
	case r.Kind != Spot && r.Kind != ASGTermination:
		return fmt.Errorf("kind %q, want %s or %s", r.Kind, Spot, ASGTermination)
	case r.NoticeTime.IsZero():
		return errors.New("noticeTime is missing")
	}
	return nil
}

// ParseRecord decodes the leave record stored under key, strictly: no
// unknown, duplicate or case-variant field, valid fields, and the instance ID
// the key names.
func ParseRecord(key string, body []byte) (Record, error) {
	var r Record
	if len(body) > maxRecordSize {
		return r, fmt.Errorf("leave record %s: %d bytes, more than %d", key, len(body), maxRecordSize)
	}
	strict, err := sigsjson.UnmarshalStrict(body, &r)
	if err != nil {
		return r, fmt.Errorf("leave record %s: %w", key, err)
	}
	if len(strict) > 0 {
		return r, fmt.Errorf("leave record %s: %w", key, errors.Join(strict...))
	}
	if err := r.Validate(); err != nil {
		return r, fmt.Errorf("leave record %s: %w", key, err)
	}
	if want := r.InstanceID + ".json"; !strings.HasSuffix(key, "/"+want) {
		return r, fmt.Errorf("leave record %s: it names instance %s, which is not the one its key names", key, r.InstanceID)
	}
	return r, nil
}

// RecordS3API is the part of the S3 client the RecordStore uses.
type RecordS3API interface {
	PutObject(ctx context.Context, in *s3.PutObjectInput, optFns ...func(*s3.Options)) (*s3.PutObjectOutput, error)
	GetObject(ctx context.Context, in *s3.GetObjectInput, optFns ...func(*s3.Options)) (*s3.GetObjectOutput, error)
	ListObjectsV2(ctx context.Context, in *s3.ListObjectsV2Input, optFns ...func(*s3.Options)) (*s3.ListObjectsV2Output, error)
	DeleteObject(ctx context.Context, in *s3.DeleteObjectInput, optFns ...func(*s3.Options)) (*s3.DeleteObjectOutput, error)
}

// RecordStore keeps a cluster's leave records in S3. A worker only puts its
// own (IAM: s3:PutObject on <cluster>/leave/*); the control plane lists,
// reads and deletes them.
type RecordStore struct {
	Client  RecordS3API
	Bucket  string
	Cluster string
	// CallTimeout bounds each S3 call (default 20s).
	CallTimeout time.Duration

	// seen holds what List read, by key and ETag: an unchanged object is
	// not read again at the next List (one caller at a time).
	seen map[string]StoredRecord
}

func (s *RecordStore) timeout() time.Duration {
	if s.CallTimeout > 0 {
		return s.CallTimeout
	}
	return 20 * time.Second
}

// Put writes r.
func (s *RecordStore) Put(ctx context.Context, r Record) error {
	if err := r.Validate(); err != nil {
		return fmt.Errorf("leave record: %w", err)
	}
	body, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode leave record: %w", err)
	}
	key := RecordKey(s.Cluster, r.InstanceID)
	ctx, cancel := context.WithTimeout(ctx, s.timeout())
	defer cancel()
	_, err = s.Client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(s.Bucket), Key: aws.String(key),
		Body: bytes.NewReader(body), ContentLength: aws.Int64(int64(len(body))), ContentType: aws.String("application/json")})
	if err != nil {
		return fmt.Errorf("put s3://%s/%s: %w", s.Bucket, key, err)
	}
	return nil
}

// StoredRecord is one object under the leave prefix: its record, or why it
// is not a valid one.
type StoredRecord struct {
	Key     string
	ETag    string
	Record  Record
	Invalid error
	// Modified is when S3 stored the object.
	Modified time.Time
}

// List reads every leave record of the cluster (at most 1000). An object
// that is not a valid record is returned with Invalid set.
func (s *RecordStore) List(ctx context.Context) ([]StoredRecord, error) {
	var out []StoredRecord
	seen := map[string]StoredRecord{}
	defer func() { s.seen = seen }()
	in := &s3.ListObjectsV2Input{Bucket: aws.String(s.Bucket), Prefix: aws.String(RecordPrefix(s.Cluster))}
	for len(out) < maxRecords {
		lctx, cancel := context.WithTimeout(ctx, s.timeout())
		page, err := s.Client.ListObjectsV2(lctx, in)
		cancel()
		if err != nil {
			return out, fmt.Errorf("list s3://%s/%s: %w", s.Bucket, RecordPrefix(s.Cluster), err)
		}
		for _, obj := range page.Contents {
			if len(out) == maxRecords {
				break
			}
			key := aws.ToString(obj.Key)
			sr := StoredRecord{Key: key, ETag: aws.ToString(obj.ETag), Modified: aws.ToTime(obj.LastModified)}
			if prev, ok := s.seen[key]; ok && sr.ETag != "" && prev.ETag == sr.ETag {
				seen[key] = prev
				out = append(out, prev)
				continue
			}
			body, err := s.get(ctx, key)
			switch {
			case err != nil && isNoSuchKey(err):
				continue // deleted since the listing
			case err != nil:
				return out, err
			}
			sr.Record, sr.Invalid = ParseRecord(key, body)
			seen[key] = sr
			out = append(out, sr)
		}
		if !aws.ToBool(page.IsTruncated) || page.NextContinuationToken == nil {
			break
		}
		in.ContinuationToken = page.NextContinuationToken
	}
	return out, nil
}

func (s *RecordStore) get(ctx context.Context, key string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout())
	defer cancel()
	obj, err := s.Client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.Bucket), Key: aws.String(key)})
	if err != nil {
		return nil, fmt.Errorf("get s3://%s/%s: %w", s.Bucket, key, err)
	}
	defer obj.Body.Close()
	body, err := io.ReadAll(io.LimitReader(obj.Body, maxRecordSize+1))
	if err != nil {
		return nil, fmt.Errorf("read s3://%s/%s: %w", s.Bucket, key, err)
	}
	return body, nil
}

// Delete removes the object at key (a record's Key).
func (s *RecordStore) Delete(ctx context.Context, key string) error {
	if !strings.HasPrefix(key, RecordPrefix(s.Cluster)) {
		return fmt.Errorf("delete %s: not a leave record of cluster %s", key, s.Cluster)
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout())
	defer cancel()
	if _, err := s.Client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.Bucket), Key: aws.String(key)}); err != nil {
		return fmt.Errorf("delete s3://%s/%s: %w", s.Bucket, key, err)
	}
	return nil
}

func isNoSuchKey(err error) bool {
	var nsk interface{ ErrorCode() string }
	return errors.As(err, &nsk) && (nsk.ErrorCode() == "NoSuchKey" || nsk.ErrorCode() == "NotFound")
}
