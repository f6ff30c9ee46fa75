package deploy

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// manifestDir holds the manifests, relative to this package.
const manifestDir = "kubernetes"

// objects are the objects of the manifests, by kind.
type objects struct {
	services     []*corev1.Service
	statefulSets []*appsv1.StatefulSet
	secrets      []*corev1.Secret
	pdbs         []*policyv1.PodDisruptionBudget
	hpas         []*autoscalingv2.HorizontalPodAutoscaler
}

// loadObjects decodes every document of every *.yaml in manifestDir but
// kustomization.yaml (TestKustomization reads that one).
func loadObjects(t *testing.T) *objects {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(manifestDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s (%v)", manifestDir, err)
	}
	o := &objects{}
	for _, file := range files {
		if filepath.Base(file) == "kustomization.yaml" {
			continue
		}
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		docs, err := splitDocuments(data)
		if err != nil {
			t.Errorf("%s: %v", file, err)
		}
		for i, doc := range docs {
			if err := o.add(doc); err != nil {
				t.Errorf("%s, document %d: %v", file, i+1, err)
			}
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	return o
}

// splitDocuments splits a YAML stream at its --- lines, leaving out
// documents that hold nothing but comments.
func splitDocuments(data []byte) ([][]byte, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if err == io.EOF {
			return docs, nil
		}
		if err != nil {
			return docs, err
		}
		if j, err := yaml.YAMLToJSON(doc); err != nil || string(j) != "null" {
			docs = append(docs, doc)
		}
	}
}

// add decodes one document into the type its apiVersion and kind name.
func (o *objects) add(doc []byte) error {
	var head metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &head); err != nil {
		return err
	}
	switch gvk := head.APIVersion + " " + head.Kind; gvk {
	case "v1 Service":
		return decodeInto(doc, &o.services)
	case "apps/v1 StatefulSet":
		return decodeInto(doc, &o.statefulSets)
	case "v1 Secret":
		return decodeInto(doc, &o.secrets)
	case "policy/v1 PodDisruptionBudget":
		return decodeInto(doc, &o.pdbs)
	case "autoscaling/v2 HorizontalPodAutoscaler":
		return decodeInto(doc, &o.hpas)
	default:
		return fmt.Errorf("unexpected object %q: teach this test its type", gvk)
	}
}

// decodeInto decodes doc strictly into a new T and appends it to list.
func decodeInto[T any](doc []byte, list *[]*T) error {
	obj := new(T)
	if err := decodeStrict(doc, obj); err != nil {
		return err
	}
	*list = append(*list, obj)
	return nil
}

// decodeStrict decodes doc into obj, refusing unknown and duplicated
// fields. On top of yaml.UnmarshalStrict it refuses field names spelt in
// another case, which encoding/json accepts and the API server does not.
func decodeStrict(doc []byte, obj any) error {
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return err
	}
	var tree any
	if err := yaml.Unmarshal(doc, &tree); err != nil {
		return err
	}
	return checkFieldNames(tree, reflect.TypeOf(obj), "")
}

// unmarshalerType is json.Unmarshaler, which types decoding themselves
// (resource.Quantity, intstr.IntOrString, metav1.Time) implement.
var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

// checkFieldNames checks that every key of tree, decoded into a value of
// type t, names a JSON field of t exactly.
func checkFieldNames(tree any, t reflect.Type, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		return nil
	}
	switch t.Kind() {
	case reflect.Struct:
		m, _ := tree.(map[string]any)
		fields := jsonFields(t)
		for k, v := range m {
			ft, ok := fields[k]
			if !ok {
				return fmt.Errorf("%s%s: no such field (names are case-sensitive)", path, k)
			}
			if err := checkFieldNames(v, ft, path+k+"."); err != nil {
				return err
			}
		}
	case reflect.Map:
		m, _ := tree.(map[string]any)
		for k, v := range m {
			if err := checkFieldNames(v, t.Elem(), path+k+"."); err != nil {
				return err
			}
		}
	case reflect.Slice, reflect.Array:
		l, _ := tree.([]any)
		for i, v := range l {
			if err := checkFieldNames(v, t.Elem(), fmt.Sprintf("%s[%d].", path, i)); err != nil {
				return err
			}
		}
	}
	return nil
}

// jsonFields maps the JSON names of struct type t's fields to their
// types, with the fields of embedded structs promoted as encoding/json
// promotes them (metav1.TypeMeta is embedded with `json:",inline"`).
func jsonFields(t reflect.Type) map[string]reflect.Type {
	fields := make(map[string]reflect.Type)
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch {
		case name == "-" || (!f.IsExported() && !f.Anonymous):
		case name == "" && f.Anonymous && f.Type.Kind() == reflect.Struct:
			maps.Copy(fields, jsonFields(f.Type))
		case name == "":
			fields[f.Name] = f.Type
		default:
			fields[name] = f.Type
		}
	}
	return fields
}

// TestStrictDecoding checks that decoding a manifest refuses what the API
// server would refuse, so that the other tests see what it would see.
func TestStrictDecoding(t *testing.T) {
	const good = "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\nspec:\n  clusterIP: None\n"
	var o objects
	if err := o.add([]byte(good)); err != nil {
		t.Fatalf("a valid Service: %v", err)
	}
	for name, doc := range map[string]string{
		"unknown field":         good + "  clusterIPs2: [None]\n",
		"duplicated field":      good + "  clusterIP: 10.0.0.1\n",
		"field in another case": strings.Replace(good, "clusterIP", "clusterip", 1),
		"unknown kind":          strings.Replace(good, "Service", "Sevrice", 1),
	} {
		if err := o.add([]byte(doc)); err == nil {
			t.Errorf("%s: decoded without error:\n%s", name, doc)
		}
	}
}

// TestKustomization checks that every resource kustomization.yaml lists
// exists, and that it lists neither the example Secret, whose placeholder
// values must never reach a cluster, nor any other *-example.yaml.
func TestKustomization(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(manifestDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// Not strict: kustomize has many more fields than this test reads.
	var k struct {
		APIVersion string   `json:"apiVersion"`
		Kind       string   `json:"kind"`
		Resources  []string `json:"resources"`
	}
	if err := yaml.Unmarshal(data, &k); err != nil {
		t.Fatal(err)
	}
	if k.Kind != "Kustomization" || !strings.HasPrefix(k.APIVersion, "kustomize.config.k8s.io/") {
		t.Errorf("kustomization.yaml is %s %s, want a kustomize.config.k8s.io Kustomization", k.APIVersion, k.Kind)
	}
	if len(k.Resources) == 0 {
		t.Error("kustomization.yaml lists no resources")
	}
	for _, r := range k.Resources {
		path := filepath.Join(manifestDir, r)
		data, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("resource %s: %v", r, err)
			continue
		}
		if strings.HasSuffix(r, "-example.yaml") {
			t.Errorf("resource %s is an example, not to be applied as it is", r)
		}
		docs, _ := splitDocuments(data)
		for _, doc := range docs {
			var o objects
			if o.add(doc) == nil && len(o.secrets) > 0 {
				t.Errorf("resource %s holds Secret %s: secrets are created apart, never from a file in the repository", r, o.secrets[0].Name)
			}
		}
	}
}

// grid is what the invariants relate: the one StatefulSet and its
// container, the headless and the client Service, the example Secret,
// and the flags the container gives `shoal node`.
type grid struct {
	*objects
	sts      *appsv1.StatefulSet
	pod      *corev1.PodSpec
	c        *corev1.Container
	headless *corev1.Service
	client   *corev1.Service
	secret   *corev1.Secret
	flags    map[string]string // by flag name, without the dashes
}

// loadGrid loads the manifests and picks out what the invariants relate.
func loadGrid(t *testing.T) *grid {
	t.Helper()
	g := &grid{objects: loadObjects(t)}
	if len(g.statefulSets) != 1 || len(g.secrets) != 1 || len(g.services) != 2 {
		t.Fatalf("want 1 StatefulSet, 1 Secret and 2 Services, have %d, %d and %d",
			len(g.statefulSets), len(g.secrets), len(g.services))
	}
	g.sts, g.secret = g.statefulSets[0], g.secrets[0]
	g.pod = &g.sts.Spec.Template.Spec
	if len(g.pod.Containers) != 1 {
		t.Fatalf("StatefulSet %s: want 1 container, have %d", g.sts.Name, len(g.pod.Containers))
	}
	g.c = &g.pod.Containers[0]
	for _, s := range g.services {
		if s.Spec.ClusterIP == corev1.ClusterIPNone {
			g.headless = s
		} else {
			g.client = s
		}
	}
	if g.headless == nil || g.client == nil {
		t.Fatal("want one headless Service (clusterIP: None) to join through and one for clients")
	}
	var err error
	if g.flags, err = nodeFlags(g.c); err != nil {
		t.Fatalf("container %s: %v", g.c.Name, err)
	}
	return g
}

// nodeFlags returns the flags c gives `shoal node`, from its args
// (--flag=value or --flag value) and from its SHOAL_<FLAG> variables,
// which the node reads as flags.
func nodeFlags(c *corev1.Container) (map[string]string, error) {
	// The image's ENTRYPOINT runs /shoal; args start with the command.
	if len(c.Command) > 0 && !slices.Equal(c.Command, []string{"/shoal"}) {
		return nil, fmt.Errorf("command %q replaces the image's /shoal", c.Command)
	}
	if len(c.Args) == 0 || c.Args[0] != "node" {
		return nil, fmt.Errorf("args %q do not start with node", c.Args)
	}
	flags := make(map[string]string)
	set := func(name, value string) error {
		if _, dup := flags[name]; dup {
			return fmt.Errorf("--%s given twice (args win over SHOAL_ variables: give it once)", name)
		}
		flags[name] = value
		return nil
	}
	for i := 1; i < len(c.Args); i++ {
		arg, ok := strings.CutPrefix(c.Args[i], "--")
		if !ok {
			return nil, fmt.Errorf("arg %q: shoal node takes no arguments but --flags", c.Args[i])
		}
		name, value, hasValue := strings.Cut(arg, "=")
		if !hasValue && i+1 < len(c.Args) && !strings.HasPrefix(c.Args[i+1], "-") {
			i++
			value = c.Args[i]
		}
		if err := set(name, value); err != nil {
			return nil, err
		}
	}
	for _, e := range c.Env {
		if rest, ok := strings.CutPrefix(e.Name, "SHOAL_"); ok {
			if err := set(strings.ToLower(strings.ReplaceAll(rest, "_", "-")), e.Value); err != nil {
				return nil, err
			}
		}
	}
	return flags, nil
}

// flag returns the value of a flag the container must give.
func (g *grid) flag(t *testing.T, name string) string {
	t.Helper()
	v, ok := g.flags[name]
	if !ok {
		t.Fatalf("container %s does not give --%s", g.c.Name, name)
	}
	return v
}

// listenPort checks that flag binds every interface, as it must for the
// kubelet's probes and for the other pods to reach it, and returns its
// port.
func (g *grid) listenPort(t *testing.T, flag string) int32 {
	t.Helper()
	host, port, err := net.SplitHostPort(g.flag(t, flag))
	n, perr := strconv.ParseUint(port, 10, 16)
	if err != nil || perr != nil {
		t.Fatalf("--%s=%s is not HOST:PORT", flag, g.flags[flag])
	}
	if host != "0.0.0.0" {
		t.Errorf("--%s=%s: want host 0.0.0.0, so that the pod IP reaches it", flag, g.flags[flag])
	}
	return int32(n)
}

// containerPort finds the container port ref (a name or a number) names.
func (g *grid) containerPort(ref intstr.IntOrString, proto corev1.Protocol) *corev1.ContainerPort {
	if proto == "" {
		proto = corev1.ProtocolTCP
	}
	for i, p := range g.c.Ports {
		pp := p.Protocol
		if pp == "" {
			pp = corev1.ProtocolTCP
		}
		if pp == proto && (ref.Type == intstr.String && p.Name == ref.StrVal || ref.Type == intstr.Int && p.ContainerPort == ref.IntVal) {
			return &g.c.Ports[i]
		}
	}
	return nil
}

// checkServicePorts checks that every port of s leads to a container port
// of the same protocol, and that s has want.
func (g *grid) checkServicePorts(t *testing.T, s *corev1.Service, want ...corev1.ServicePort) {
	t.Helper()
	for _, p := range s.Spec.Ports {
		target := p.TargetPort
		if target.Type == intstr.Int && target.IntVal == 0 {
			target = intstr.FromInt32(p.Port)
		}
		if g.containerPort(target, p.Protocol) == nil {
			t.Errorf("Service %s port %s: target %s/%s is no port of container %s", s.Name, p.Name, target.String(), p.Protocol, g.c.Name)
		}
	}
	for _, w := range want {
		if !slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool {
			return p.Port == w.Port && (p.Protocol == w.Protocol || p.Protocol == "" && w.Protocol == corev1.ProtocolTCP)
		}) {
			t.Errorf("Service %s has no port %d/%s", s.Name, w.Port, w.Protocol)
		}
	}
}

// TestManifests checks the invariants the manifests must keep for the
// nodes to start, find each other, be probed, drain and be scaled.
func TestManifests(t *testing.T) {
	g := loadGrid(t)
	podLabels := labels.Set(g.sts.Spec.Template.Labels)

	t.Run("headless Service", func(t *testing.T) {
		h := g.headless
		if !h.Spec.PublishNotReadyAddresses {
			t.Errorf("Service %s: publishNotReadyAddresses must be true: nodes are not ready until they have joined through it", h.Name)
		}
		gossip := g.listenPort(t, "gossip")
		if gossip != 7946 {
			t.Errorf("--gossip port %d, want 7946", gossip)
		}
		g.checkServicePorts(t, h, corev1.ServicePort{Port: gossip, Protocol: corev1.ProtocolTCP}, corev1.ServicePort{Port: gossip, Protocol: corev1.ProtocolUDP})
		for _, proto := range []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP} {
			if g.containerPort(intstr.FromInt32(gossip), proto) == nil {
				t.Errorf("container %s has no port %d/%s for gossip", g.c.Name, gossip, proto)
			}
		}
		if g.sts.Spec.ServiceName != h.Name {
			t.Errorf("StatefulSet serviceName %q, want the headless Service %q", g.sts.Spec.ServiceName, h.Name)
		}
	})

	t.Run("client Service", func(t *testing.T) {
		rpc, http := g.listenPort(t, "rpc"), g.listenPort(t, "http")
		if rpc != 7373 || http != 8787 {
			t.Errorf("--rpc port %d and --http port %d, want 7373 and 8787", rpc, http)
		}
		g.checkServicePorts(t, g.client, corev1.ServicePort{Port: rpc, Protocol: corev1.ProtocolTCP}, corev1.ServicePort{Port: http, Protocol: corev1.ProtocolTCP})
		for _, p := range []int32{rpc, http} {
			if g.containerPort(intstr.FromInt32(p), corev1.ProtocolTCP) == nil {
				t.Errorf("container %s has no port %d", g.c.Name, p)
			}
		}
	})

	t.Run("selectors", func(t *testing.T) {
		for _, s := range g.services {
			if len(s.Spec.Selector) == 0 || !labels.SelectorFromSet(s.Spec.Selector).Matches(podLabels) {
				t.Errorf("Service %s selector %v does not select the pods (labels %v)", s.Name, s.Spec.Selector, podLabels)
			}
		}
		check := func(what string, sel *metav1.LabelSelector) {
			s, err := metav1.LabelSelectorAsSelector(sel)
			if err != nil || s.Empty() || !s.Matches(podLabels) {
				t.Errorf("%s selector %v does not select the pods (labels %v) %v", what, sel, podLabels, err)
			}
		}
		check("StatefulSet "+g.sts.Name, g.sts.Spec.Selector)
		if len(g.pdbs) == 0 {
			t.Error("no PodDisruptionBudget")
		}
		for _, p := range g.pdbs {
			check("PodDisruptionBudget "+p.Name, p.Spec.Selector)
			if p.Spec.MaxUnavailable == nil || p.Spec.MaxUnavailable.String() != "1" {
				t.Errorf("PodDisruptionBudget %s: maxUnavailable %v, want 1", p.Name, p.Spec.MaxUnavailable)
			}
		}
	})

	t.Run("StatefulSet", func(t *testing.T) {
		if g.sts.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
			t.Errorf("podManagementPolicy %q, want Parallel: the nodes find each other however they start", g.sts.Spec.PodManagementPolicy)
		}
		if r := g.sts.Spec.Replicas; r == nil || *r != 3 {
			t.Errorf("replicas %s, want 3", show(r))
		}
	})

	t.Run("join", func(t *testing.T) {
		seeds := strings.Split(g.flag(t, "join"), ",")
		for _, seed := range seeds {
			host, port, err := net.SplitHostPort(seed)
			if err != nil {
				t.Errorf("--join %s: %v", seed, err)
				continue
			}
			if want := strconv.Itoa(int(g.listenPort(t, "gossip"))); port != want {
				t.Errorf("--join %s: port %s, want the gossip port %s", seed, port, want)
			}
			// <service>[.<namespace>[.svc[.<cluster domain>]]]
			parts := strings.Split(host, ".")
			if parts[0] != g.headless.Name || len(parts) == 2 && parts[1] == "" || len(parts) >= 3 && parts[2] != "svc" {
				t.Errorf("--join %s: want the headless Service, %s.<namespace>.svc.cluster.local", seed, g.headless.Name)
			}
		}
		// The kubelet expands $(VAR) in args only for variables the
		// container defines, and leaves the others as they are.
		defined := make(map[string]bool)
		for _, e := range g.c.Env {
			defined[e.Name] = true
		}
		for _, arg := range g.c.Args {
			for _, m := range regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`).FindAllStringSubmatch(arg, -1) {
				if !defined[m[1]] {
					t.Errorf("arg %q uses $(%s), which the container does not define", arg, m[1])
				}
			}
		}
		if d, err := time.ParseDuration(g.flag(t, "join-timeout")); err != nil || d < 5*time.Minute {
			t.Errorf("--join-timeout=%s, want at least 5m: pods and their DNS records can take minutes to appear (%v)", g.flags["join-timeout"], err)
		}
	})

	t.Run("environment", func(t *testing.T) {
		if e := g.pod.EnableServiceLinks; e == nil || *e {
			t.Error("enableServiceLinks must be false: service links define SHOAL_* variables, which the node reads as flags")
		}
		for name, field := range map[string]string{"SHOAL_NAME": "metadata.name", "SHOAL_ADVERTISE": "status.podIP"} {
			i := slices.IndexFunc(g.c.Env, func(e corev1.EnvVar) bool { return e.Name == name })
			if i < 0 || g.c.Env[i].ValueFrom == nil || g.c.Env[i].ValueFrom.FieldRef == nil || g.c.Env[i].ValueFrom.FieldRef.FieldPath != field {
				t.Errorf("want %s from the downward API's %s", name, field)
			}
		}
	})

	t.Run("probes", func(t *testing.T) {
		http := g.listenPort(t, "http")
		for _, p := range []struct {
			what, path string
			probe      *corev1.Probe
		}{{"readinessProbe", "/readyz", g.c.ReadinessProbe}, {"livenessProbe", "/healthz", g.c.LivenessProbe}} {
			if p.probe == nil || p.probe.HTTPGet == nil {
				t.Errorf("no %s with httpGet", p.what)
				continue
			}
			get := p.probe.HTTPGet
			if get.Path != p.path || get.Scheme != "" && get.Scheme != corev1.URISchemeHTTP {
				t.Errorf("%s: %s %s, want HTTP GET %s", p.what, get.Scheme, get.Path, p.path)
			}
			if cp := g.containerPort(get.Port, corev1.ProtocolTCP); cp == nil || cp.ContainerPort != http || cp.Name != "http" {
				t.Errorf("%s: port %s, want the container port http, which --http gives as %d", p.what, get.Port.String(), http)
			}
		}
	})

	t.Run("drain", func(t *testing.T) {
		drain, err := time.ParseDuration(g.flag(t, "drain-timeout"))
		if err != nil {
			t.Fatalf("--drain-timeout: %v", err)
		}
		grace := g.pod.TerminationGracePeriodSeconds
		if grace == nil || time.Duration(*grace)*time.Second <= drain {
			t.Errorf("terminationGracePeriodSeconds %s must exceed --drain-timeout %v, or the kubelet kills nodes while they drain", show(grace), drain)
		}
	})

	t.Run("Secret", func(t *testing.T) {
		keys := make(map[string]bool)
		for k := range g.secret.Data {
			keys[k] = true
		}
		for k := range g.secret.StringData {
			keys[k] = true
		}
		// A mistaken apply of the example must fail closed, not gossip
		// under a key published in the repository.
		if k, err := base64.StdEncoding.DecodeString(g.secret.StringData["gossip.key"] + string(g.secret.Data["gossip.key"])); err == nil && len(k) > 0 {
			t.Errorf("Secret %s: the example gossip.key decodes as a key; make it an obvious placeholder", g.secret.Name)
		}
		files := make(map[string]bool) // paths of the Secret's files in the container
		for _, v := range g.pod.Volumes {
			if v.Secret == nil {
				continue
			}
			if v.Secret.SecretName != g.secret.Name {
				t.Errorf("volume %s: Secret %q, want %q", v.Name, v.Secret.SecretName, g.secret.Name)
				continue
			}
			if m := v.Secret.DefaultMode; m == nil || *m&0o007 != 0 {
				mode := "0644 (the default)"
				if m != nil {
					mode = fmt.Sprintf("%#o", *m)
				}
				t.Errorf("volume %s: defaultMode %s lets every user read the secrets; want 0440 (with fsGroup) or less", v.Name, mode)
			}
			names := make(map[string]string) // file name to key
			for _, it := range v.Secret.Items {
				if !keys[it.Key] {
					t.Errorf("volume %s: Secret %s has no key %q", v.Name, g.secret.Name, it.Key)
				}
				names[it.Path] = it.Key
			}
			if len(v.Secret.Items) == 0 {
				for k := range keys {
					names[k] = k
				}
			}
			for _, m := range g.c.VolumeMounts {
				if m.Name != v.Name {
					continue
				}
				if !m.ReadOnly {
					t.Errorf("volume mount %s at %s is not readOnly", m.Name, m.MountPath)
				}
				for name := range names {
					files[filepath.Join(m.MountPath, name)] = true
				}
			}
		}
		for _, e := range g.c.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				if ref := e.ValueFrom.SecretKeyRef; ref.Name != g.secret.Name || !keys[ref.Key] {
					t.Errorf("env %s: Secret %s has no key %q", e.Name, ref.Name, ref.Key)
				}
			}
		}
		for _, flag := range []string{"gossip-key-file", "token-file"} {
			if path := g.flag(t, flag); !files[filepath.Clean(path)] {
				t.Errorf("--%s=%s is no file of Secret %s as mounted (files: %v)", flag, path, g.secret.Name, slices.Sorted(maps.Keys(files)))
			}
		}
	})

	t.Run("resources", func(t *testing.T) {
		res := g.c.Resources
		cpu, mem, limit := res.Requests.Cpu(), res.Requests.Memory(), res.Limits.Memory()
		if cpu.IsZero() || mem.IsZero() || limit.IsZero() {
			t.Fatalf("want requests for cpu and memory and a memory limit, have %v", res)
		}
		// The node's own estimate, which it also sets as its Go soft
		// memory limit: 32 MiB + --cache-size + --max-inflight-bytes.
		need := resource.MustParse("32Mi")
		for _, flag := range []string{"cache-size", "max-inflight-bytes"} {
			q, err := resource.ParseQuantity(g.flag(t, flag))
			if err != nil {
				t.Fatalf("--%s: %v", flag, err)
			}
			need.Add(q)
		}
		if limit.Cmp(need) <= 0 || limit.Cmp(*mem) < 0 {
			t.Errorf("memory limit %v must exceed the node's %v and be at least the request %v", limit, &need, mem)
		}
	})

	t.Run("Prometheus annotations", func(t *testing.T) {
		a := g.sts.Spec.Template.Annotations
		http := strconv.Itoa(int(g.listenPort(t, "http")))
		if a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != http || a["prometheus.io/path"] != "/metrics" {
			t.Errorf("pod annotations %v, want prometheus.io/scrape true, port %s (--http) and path /metrics", a, http)
		}
	})

	t.Run("HorizontalPodAutoscaler", func(t *testing.T) {
		if len(g.hpas) == 0 {
			t.Fatal("no HorizontalPodAutoscaler")
		}
		for _, h := range g.hpas {
			ref := h.Spec.ScaleTargetRef
			if ref.APIVersion != "apps/v1" || ref.Kind != "StatefulSet" || ref.Name != g.sts.Name {
				t.Errorf("HPA %s scales %s %s %s, want apps/v1 StatefulSet %s", h.Name, ref.APIVersion, ref.Kind, ref.Name, g.sts.Name)
			}
			if !slices.ContainsFunc(h.Spec.Metrics, func(m autoscalingv2.MetricSpec) bool {
				return m.Type == autoscalingv2.PodsMetricSourceType && m.Pods != nil && m.Pods.Metric.Name == "shoal_executor_queued" &&
					m.Pods.Target.Type == autoscalingv2.AverageValueMetricType && m.Pods.Target.AverageValue != nil && m.Pods.Target.AverageValue.Sign() > 0
			}) {
				t.Errorf("HPA %s: want a Pods metric shoal_executor_queued with a positive averageValue target", h.Name)
			}
		}
	})

	t.Run("security", func(t *testing.T) {
		sc, psc := g.c.SecurityContext, g.pod.SecurityContext
		if sc == nil {
			sc = &corev1.SecurityContext{}
		}
		if psc == nil {
			psc = &corev1.PodSecurityContext{}
		}
		// The container's settings win over the pod's.
		nonRoot, user := cmpOr(sc.RunAsNonRoot, psc.RunAsNonRoot), cmpOr(sc.RunAsUser, psc.RunAsUser)
		if nonRoot == nil || !*nonRoot || user == nil || *user != 65532 {
			t.Error("want runAsNonRoot and runAsUser 65532, the image's user")
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Error("want readOnlyRootFilesystem")
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Error("want allowPrivilegeEscalation false")
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			t.Error("want capabilities drop ALL")
		}
	})
}

// show formats *p, or says p is unset.
func show[T any](p *T) string {
	if p == nil {
		return "unset"
	}
	return fmt.Sprint(*p)
}

// cmpOr returns the first of ps that is not nil.
func cmpOr[T any](ps ...*T) *T {
	for _, p := range ps {
		if p != nil {
			return p
		}
	}
	return nil
}

// TestNodeFlags checks that every flag the container gives, in its args
// or as a SHOAL_ variable, is one `shoal node --help` lists: the node
// refuses unknown flags, but ignores unknown SHOAL_ variables.
func TestNodeFlags(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cmd/shoal")
	}
	g := loadGrid(t)
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "shoal")
	// Built as scripts/image.sh and the multi-host tests build it, so that
	// the build cache serves all three.
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "./cmd/shoal")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/shoal: %v\n%s", err, out)
	}
	help := exec.Command(bin, "node", "--help")
	// Keep this test's environment from setting the node's flags.
	help.Env = slices.DeleteFunc(os.Environ(), func(e string) bool { return strings.HasPrefix(e, "SHOAL_") })
	out, err := help.CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) || len(out) == 0 {
		t.Fatalf("shoal node --help: %v\n%s", err, out)
	}
	// The flag lists ("  -h, --help", "      --name string") follow
	// "Flags:"; the prose and examples before it mention flags too.
	_, lists, ok := bytes.Cut(out, []byte("\nFlags:\n"))
	if !ok {
		t.Fatalf("shoal node --help lists no flags:\n%s", out)
	}
	for _, name := range slices.Sorted(maps.Keys(g.flags)) {
		if !regexp.MustCompile(`(?m)^\s+(-\w, )?--` + regexp.QuoteMeta(name) + `\s`).Match(lists) {
			t.Errorf("--%s is not a flag of shoal node (not in shoal node --help)", name)
		}
	}
}
