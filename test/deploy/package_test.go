//go:build deploy

package deploy

import (
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

const pkgVersion = "0.1.0~test"

var (
	pkgOnce sync.Once
	pkgDir  string
	pkgErr  error
)

// packages builds the .deb and .rpm from packaging/nfpm.yaml exactly as
// `make package` does, but in a staging copy of the inputs, so the test never
// writes into the repository. It returns the directory holding both packages.
func packages(t *testing.T) string {
	t.Helper()
	root := repoRoot(t)
	bin := kubestrapBin(t)
	pkgOnce.Do(func() {
		pkgErr = func() error {
			stage := filepath.Join(sharedDir, "pkg-stage")
			nfpm := filepath.Join(sharedDir, "nfpm")
			build := exec.Command("go", "build", "-o", nfpm, "github.com/goreleaser/nfpm/v2/cmd/nfpm")
			build.Dir = root
			if out, err := build.CombinedOutput(); err != nil {
				return fmt.Errorf("go build nfpm (the Go tool of the module): %v\n%s", err, out)
			}
			for _, dir := range []string{"systemd", "packaging"} {
				copyTree(t, filepath.Join(root, dir), filepath.Join(stage, dir))
			}
			if err := copyFile(bin, filepath.Join(stage, "bin", "kubestrap"), 0o755); err != nil {
				return err
			}
			if err := gzipFile(filepath.Join(root, "packaging", "kubestrap.8"), filepath.Join(stage, "dist", "man", "kubestrap.8.gz")); err != nil {
				return err
			}
			out := filepath.Join(sharedDir, "dist")
			if err := os.MkdirAll(out, 0o755); err != nil {
				return err
			}
			for _, packager := range []string{"deb", "rpm"} {
				cmd := exec.Command(nfpm, "package", "--config", "packaging/nfpm.yaml", "--packager", packager, "--target", out+"/")
				cmd.Dir = stage
				cmd.Env = append(os.Environ(), "VERSION="+pkgVersion, "ARCH=amd64", "SOURCE_DATE_EPOCH=1795651200")
				if msg, err := cmd.CombinedOutput(); err != nil {
					return fmt.Errorf("nfpm package --packager %s: %v\n%s", packager, err, msg)
				}
			}
			pkgDir = out
			return nil
		}()
	})
	if pkgErr != nil {
		t.Fatal(pkgErr)
	}
	return pkgDir
}

func gzipFile(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	zw, _ := gzip.NewWriterLevel(f, gzip.BestCompression)
	if _, err := zw.Write(data); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return f.Close()
}

func onePackage(t *testing.T, pattern string) string {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join(packages(t), pattern))
	if err != nil || len(matches) != 1 {
		t.Fatalf("want one package matching %s, got %q (%v)", pattern, matches, err)
	}
	return matches[0]
}

func TestDebLintian(t *testing.T) {
	lintian := needTool(t, "lintian")
	deb := onePackage(t, "kubestrap_*_amd64.deb")
	res := runCmd(t, cmdSpec{timeout: 5 * time.Minute}, lintian, "--no-cfg", "--display-level", ">=pedantic", deb)
	var errs []string
	for _, line := range strings.Split(res.stdout, "\n") {
		if line != "" {
			t.Log(line)
		}
		if strings.HasPrefix(line, "E: ") {
			errs = append(errs, line)
		}
	}
	if len(errs) > 0 || res.code != 0 {
		t.Fatalf("lintian reports errors on %s:\n%s\n%s", filepath.Base(deb), strings.Join(errs, "\n"), res)
	}
}

func TestDebMetadata(t *testing.T) {
	dpkgDeb := needTool(t, "dpkg-deb")
	deb := onePackage(t, "kubestrap_*_amd64.deb")

	fields := mustRun(t, cmdSpec{}, dpkgDeb, "--field", deb, "Package", "Version", "Architecture", "Maintainer", "Recommends").stdout
	for _, want := range []string{"Package: kubestrap", "Version: " + pkgVersion + "-1", "Architecture: amd64", "Recommends: kubeadm, kubelet"} {
		if !strings.Contains(fields, want) {
			t.Errorf("control fields lack %q:\n%s", want, fields)
		}
	}
	if strings.Contains(fields, "Depends:") {
		t.Errorf("the static binary needs no Depends:\n%s", fields)
	}

	ctrl := t.TempDir()
	mustRun(t, cmdSpec{}, dpkgDeb, "--control", deb, ctrl)
	conffiles, err := os.ReadFile(filepath.Join(ctrl, "conffiles"))
	if err != nil || strings.TrimSpace(string(conffiles)) != "/etc/kubestrap/config.yaml.example" {
		t.Errorf("conffiles = %q (%v), want only /etc/kubestrap/config.yaml.example", conffiles, err)
	}
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		fi, err := os.Stat(filepath.Join(ctrl, s))
		if err != nil {
			t.Errorf("maintainer script %s missing: %v", s, err)
			continue
		}
		if fi.Mode().Perm() != 0o755 {
			t.Errorf("%s mode %o, want 755", s, fi.Mode().Perm())
		}
	}
	// Never enable or start the service from a package script.
	forbidden := regexp.MustCompile(`(?m)^[^#]*\b(enable|start|restart|reload-or-restart|try-restart)\b`)
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		data, _ := os.ReadFile(filepath.Join(ctrl, s))
		if m := forbidden.Find(data); m != nil {
			t.Errorf("%s enables or starts something: %q", s, m)
		}
	}
}

// chrootRoot is a scratch root in which dpkg and rpm can run maintainer
// scripts: a static-enough shell, rm, /dev/null, and recording stand-ins for
// systemctl, deb-systemd-invoke and deb-systemd-helper. With systemdRunning,
// /run/systemd/system exists, as on a booted systemd machine.
func chrootRoot(t *testing.T, systemdRunning bool) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("installing into a scratch root runs maintainer scripts in a chroot, which needs root")
	}
	root := t.TempDir()
	for _, d := range []string{"bin", "usr/bin", "tmp", "dev", "var/lib/dpkg/info", "var/lib/dpkg/updates", "etc/default"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "var/lib/dpkg/status"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for name, src := range map[string]string{"bin/sh": "sh", "bin/rm": "rm", "bin/cat": "cat"} {
		p, err := exec.LookPath(src)
		if err != nil {
			t.Skipf("%s not found: %v", src, err)
		}
		p, _ = filepath.EvalSymlinks(p)
		if err := copyFile(p, filepath.Join(root, name), 0o755); err != nil {
			t.Fatal(err)
		}
		copyLibs(t, p, root)
	}
	if err := exec.Command("mknod", "-m", "666", filepath.Join(root, "dev/null"), "c", "1", "3").Run(); err != nil {
		t.Skipf("cannot create /dev/null in the scratch root: %v", err)
	}
	for _, tool := range []string{"systemctl", "deb-systemd-invoke", "deb-systemd-helper"} {
		script := fmt.Sprintf("#!/bin/sh\necho \"%s $*\" >> /tmp/systemd-calls\n", tool)
		if err := os.WriteFile(filepath.Join(root, "usr/bin", tool), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if systemdRunning {
		if err := os.MkdirAll(filepath.Join(root, "run/systemd/system"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// copyLibs copies the shared libraries a dynamically linked program needs.
func copyLibs(t *testing.T, prog, root string) {
	t.Helper()
	out, err := exec.Command("ldd", prog).Output()
	if err != nil {
		return // static
	}
	for _, lib := range regexp.MustCompile(`(/\S+)`).FindAllString(string(out), -1) {
		if err := copyFile(lib, filepath.Join(root, lib), 0o755); err != nil {
			t.Fatalf("copy %s: %v", lib, err)
		}
	}
}

// takeCalls returns and clears what the systemd stand-ins recorded.
func takeCalls(t *testing.T, root string) []string {
	t.Helper()
	p := filepath.Join(root, "tmp/systemd-calls")
	data, err := os.ReadFile(p)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(p)
	return strings.Split(strings.TrimSpace(string(data)), "\n")
}

func checkMode(t *testing.T, root, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(filepath.Join(root, path))
	if err != nil {
		t.Errorf("%s not installed: %v", path, err)
		return
	}
	if got := fi.Mode().Perm(); got != want || !fi.Mode().IsRegular() {
		t.Errorf("%s: mode %v, want regular file %o", path, fi.Mode(), want)
	}
	if uid, gid := ownerOf(fi); uid != 0 || gid != 0 {
		t.Errorf("%s: owned by %d:%d, want root", path, uid, gid)
	}
}

// checkInstalledFiles checks what both packages install.
func checkInstalledFiles(t *testing.T, root string) {
	t.Helper()
	checkMode(t, root, "usr/bin/kubestrap", 0o755)
	checkMode(t, root, "usr/lib/systemd/system/kubestrap.service", 0o644)
	checkMode(t, root, "etc/kubestrap/config.yaml.example", 0o644)
	checkMode(t, root, "usr/share/man/man8/kubestrap.8.gz", 0o644)
	checkMode(t, root, "usr/share/doc/kubestrap/examples/10-endpoints.conf.example", 0o644)
	// The add-on manifests the control plane applies by default (controlPlane.addons).
	checkMode(t, root, "usr/share/kubestrap/addons/flannel.yaml", 0o644)
	checkMode(t, root, "usr/share/kubestrap/addons/metrics-server.yaml", 0o644)
	if _, err := os.Stat(filepath.Join(root, "etc/kubestrap/config.yaml")); err == nil {
		t.Error("the package must not install /etc/kubestrap/config.yaml (user-data writes it)")
	}

	unit, _ := os.ReadFile(filepath.Join(root, "usr/lib/systemd/system/kubestrap.service"))
	src, _ := os.ReadFile(repoPath(t, "systemd", "kubestrap.service"))
	if string(unit) != string(src) {
		t.Error("installed unit differs from systemd/kubestrap.service")
	}
	// The packaged binary runs and accepts the packaged example configuration.
	res := runCmd(t, cmdSpec{timeout: 30 * time.Second}, filepath.Join(root, "usr/bin/kubestrap"),
		"validate", "--skip-host-checks", "--config", filepath.Join(root, "etc/kubestrap/config.yaml.example"))
	if res.code != 0 {
		t.Errorf("packaged kubestrap rejects the packaged example config: %s", res)
	}
	man, err := os.Open(filepath.Join(root, "usr/share/man/man8/kubestrap.8.gz"))
	if err == nil {
		defer man.Close()
		zr, err := gzip.NewReader(man)
		if err != nil {
			t.Errorf("man page: %v", err)
		} else if data, _ := io.ReadAll(zr); !strings.HasPrefix(string(data), ".TH KUBESTRAP 8") {
			t.Error("man page does not start with .TH KUBESTRAP 8")
		}
	}
}

func assertCalls(t *testing.T, step string, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("%s: systemd calls\n got: %q\nwant: %q", step, got, want)
	}
}

func TestDebInstallIntoScratchRoot(t *testing.T) {
	dpkg := needTool(t, "dpkg")
	deb := onePackage(t, "kubestrap_*_amd64.deb")
	root := chrootRoot(t, true)
	dpkgRun := func(args ...string) {
		t.Helper()
		mustRun(t, cmdSpec{timeout: 2 * time.Minute}, dpkg, append([]string{"--root=" + root, "--force-not-root", "--log=/dev/null"}, args...)...)
	}
	const reload = "systemctl --system daemon-reload"

	dpkgRun("--install", deb)
	checkInstalledFiles(t, root)
	assertCalls(t, "install", takeCalls(t, root), []string{reload})

	// user-data writes the live configuration; state appears at run time.
	if err := os.WriteFile(filepath.Join(root, "etc/kubestrap/config.yaml"), []byte("# by user-data\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "var/lib/kubestrap"), 0o700); err != nil {
		t.Fatal(err)
	}

	// An upgrade (here a reinstall) reloads but never stops the running agent.
	dpkgRun("--install", deb)
	assertCalls(t, "upgrade", takeCalls(t, root), []string{reload, reload})

	dpkgRun("--remove", "kubestrap")
	assertCalls(t, "remove", takeCalls(t, root), []string{
		"deb-systemd-invoke stop kubestrap.service",
		"deb-systemd-helper disable kubestrap.service",
		reload,
	})
	if _, err := os.Stat(filepath.Join(root, "usr/bin/kubestrap")); !os.IsNotExist(err) {
		t.Errorf("binary still present after remove: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "etc/kubestrap/config.yaml.example")); err != nil {
		t.Errorf("conffile removed before purge: %v", err)
	}

	dpkgRun("--purge", "kubestrap")
	assertCalls(t, "purge", takeCalls(t, root), []string{reload, "deb-systemd-helper purge kubestrap.service"})
	if _, err := os.Stat(filepath.Join(root, "var/lib/kubestrap")); !os.IsNotExist(err) {
		t.Errorf("purge left /var/lib/kubestrap: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "etc/kubestrap/config.yaml")); err != nil {
		t.Errorf("purge removed the operator's /etc/kubestrap/config.yaml: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "etc/kubestrap/config.yaml.example")); !os.IsNotExist(err) {
		t.Errorf("purge left the conffile: %v", err)
	}

	// Without systemd running (an image build chroot), the scripts stay quiet.
	t.Run("without systemd", func(t *testing.T) {
		root := chrootRoot(t, false)
		mustRun(t, cmdSpec{}, dpkg, "--root="+root, "--force-not-root", "--log=/dev/null", "--install", deb)
		mustRun(t, cmdSpec{}, dpkg, "--root="+root, "--force-not-root", "--log=/dev/null", "--remove", "kubestrap")
		assertCalls(t, "install and remove", takeCalls(t, root), []string{"deb-systemd-helper disable kubestrap.service"})
	})
}

func TestRPMInstallIntoScratchRoot(t *testing.T) {
	rpm := needTool(t, "rpm")
	pkg := onePackage(t, "kubestrap-*.x86_64.rpm")

	info := mustRun(t, cmdSpec{}, rpm, "-qp", "--qf", "%{NAME} %{VERSION} %{RELEASE} %{ARCH}\n", pkg).stdout
	if want := "kubestrap " + pkgVersion + " 1 x86_64"; strings.TrimSpace(info) != want {
		t.Errorf("rpm header %q, want %q", strings.TrimSpace(info), want)
	}
	// Modes and config flags as rpm sees them ("n": noreplace).
	files := mustRun(t, cmdSpec{}, rpm, "-qp", "--qf", "[%{FILEMODES:perms} %{FILEFLAGS:fflags} %{FILENAMES}\n]", pkg).stdout
	for _, want := range []string{
		"-rwxr-xr-x  /usr/bin/kubestrap",
		"-rw-r--r--  /usr/lib/systemd/system/kubestrap.service",
		"-rw-r--r-- cn /etc/kubestrap/config.yaml.example",
		"-rw-r--r--  /usr/share/kubestrap/addons/flannel.yaml",
		"-rw-r--r--  /usr/share/kubestrap/addons/metrics-server.yaml",
	} {
		if !strings.Contains(files, want+"\n") {
			t.Errorf("rpm file list lacks %q:\n%s", want, files)
		}
	}

	root := chrootRoot(t, true)
	mustRun(t, cmdSpec{}, rpm, "--root="+root, "--initdb")
	mustRun(t, cmdSpec{}, rpm, "--root="+root, "--install", "--nodeps", pkg)
	checkInstalledFiles(t, root)
	assertCalls(t, "install", takeCalls(t, root), []string{"systemctl --system daemon-reload"})

	mustRun(t, cmdSpec{}, rpm, "--root="+root, "--upgrade", "--replacepkgs", "--nodeps", pkg)
	for _, c := range takeCalls(t, root) {
		if strings.Contains(c, "stop") || strings.Contains(c, "disable") {
			t.Errorf("upgrade stopped or disabled the agent: %q", c)
		}
	}

	mustRun(t, cmdSpec{}, rpm, "--root="+root, "--erase", "kubestrap")
	assertCalls(t, "erase", takeCalls(t, root), []string{
		"systemctl --no-reload disable --now kubestrap.service",
		"systemctl --system daemon-reload",
	})
}
