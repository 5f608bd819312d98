//go:build e2e

package e2e

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// The demo app's delivery pipeline (mk/cicd.mk, the steps of
// .github/workflows/demo-app.yml) against the cluster and its registry:
// the image built and pushed under a new tag with ECR's credentials, rolled
// out with the ci-deployer ServiceAccount (RBAC: the demo Deployment only),
// the pods running the new tag, then rolled back to the tag before.
func TestDemoPipelineBuildPushRolloutRollback(t *testing.T) {
	mustScript(t, "demo-app.sh")
	before := jsonpath(t, "{.spec.template.spec.containers[0].image}", "deployment", "demo-app")
	tag := "e2e-" + strconv.FormatInt(time.Now().Unix(), 36)
	out := mustScript(t, "pipeline.sh", tag)
	t.Log(out)
	field := func(name string) string {
		for _, l := range strings.Split(out, "\n") {
			if v, ok := strings.CutPrefix(l, name+" "); ok {
				return strings.TrimSpace(v)
			}
		}
		return ""
	}
	prev := before[strings.LastIndex(before, ":")+1:]
	if got := field("previous-tag"); got != prev {
		t.Errorf("the pipeline recorded previous tag %q, the Deployment ran %q", got, prev)
	}
	if got := field("rolled-out"); got != tag {
		t.Errorf("after the rollout the Deployment runs tag %q, want %q", got, tag)
	}
	if !strings.Contains(out, "pushed "+ecrHost+"/kse2e/demo-app:"+tag) {
		t.Errorf("no push of %s to the registry in the pipeline's output", tag)
	}
	if got := field("rolled-back"); got != prev {
		t.Errorf("after the rollback the Deployment runs tag %q, want %q", got, prev)
	}
	if after := jsonpath(t, "{.spec.template.spec.containers[0].image}", "deployment", "demo-app"); after != before {
		t.Errorf("the Deployment's image after the rollback is %q, before the pipeline %q", after, before)
	}
	// The rollout was made by the ServiceAccount, which may do nothing else.
	if _, err := kubectlErr("auth", "can-i", "delete", "deployment/demo-app", "--as", "system:serviceaccount:default:ci-deployer"); err == nil {
		t.Errorf("ci-deployer may delete the Deployment: its Role must allow patching the demo Deployment only")
	}
	if _, err := kubectlErr("auth", "can-i", "patch", "deployment/demo-app", "--as", "system:serviceaccount:default:ci-deployer"); err != nil {
		t.Errorf("ci-deployer may not patch deployment/demo-app: %v", err)
	}
	eventually(t, 2*time.Minute, "the demo app answering again after the rollback", func() (bool, string) {
		r, _ := kubectlErr("get", "deployment", "demo-app", "-o", "jsonpath={.status.readyReplicas}/{.status.replicas}/{.status.updatedReplicas}")
		f := strings.Split(strings.TrimSpace(r), "/")
		return len(f) == 3 && f[0] != "" && f[0] == f[1] && f[1] == f[2], r
	})
}
