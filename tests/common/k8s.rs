//! The Kubernetes deliverables (`k8s/`) as the manifest tests read them: each kustomization
//! rendered once with `kubectl kustomize` ([`Rendered`]), its objects looked up by what the
//! kustomization calls them ([`Names`]), checked against the Kubernetes API schemas with
//! kubernetes-validate ([`validate_schemas`]), an Envoy config checked by `envoy --mode
//! validate` ([`envoy_validates`]), and the veto container's volumes laid out on disk as
//! the kubelet mounts them ([`Rendered::lay_out_veto_files`]).
//!
//! Nothing is skipped: without `kubectl` or `kubernetes-validate` these helpers fail and say
//! how to get them (the README's test command installs kubernetes-validate into `.venv/`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use base64::Engine;
use serde::Deserialize;
use yaml_serde::Value;

use super::envoy::unique_base_id;
use super::files::{read, repo};
use super::{envoy_binary, run_command, tool};

/// The oldest Kubernetes the manifests support: native sidecars (an init container with
/// `restartPolicy: Always`) are on by default from 1.29 (beta; GA in 1.33). The 1.28 schema
/// already knows the field, but the feature is off there and veto would block the pod.
const OLDEST_KUBERNETES: &str = "1.29.0";
/// The newest Kubernetes whose schemas kubernetes-validate 1.37.0 ships.
const NEWEST_KUBERNETES: &str = "1.37.0";

/// A kustomization rendered by `kubectl kustomize`, as text and as parsed objects.
pub struct Rendered {
    /// The kustomization directory, relative to the repository.
    pub dir: &'static str,
    pub names: Names,
    pub text: String,
    pub objects: Vec<Value>,
}

/// What a kustomization calls the objects the tests look up.
pub struct Names {
    /// The Deployment veto runs in; its Service has the same name.
    pub deployment: &'static str,
    pub network_policy: &'static str,
    /// The container the Service leads to (Envoy, or the app under Istio) and its port's name.
    pub serving: &'static str,
    pub serving_port: &'static str,
    /// The file that declares the pod's veto volumes, before kustomize renames the objects
    /// they mount.
    pub volumes_written_in: &'static str,
}

/// `k8s/`, rendered once for every test that reads it.
pub fn base() -> &'static Rendered {
    static RENDERED: OnceLock<Rendered> = OnceLock::new();
    RENDERED.get_or_init(|| Rendered::new("k8s", BASE_NAMES))
}

const BASE_NAMES: Names = Names {
    deployment: "app",
    network_policy: "app",
    serving: "envoy",
    serving_port: "http",
    volumes_written_in: "k8s/base/deployment.yaml",
};

/// `k8s/istio/`, rendered once.
pub fn istio() -> &'static Rendered {
    static RENDERED: OnceLock<Rendered> = OnceLock::new();
    RENDERED.get_or_init(|| {
        Rendered::new(
            "k8s/istio",
            Names {
                serving: "app",
                ..BASE_NAMES
            },
        )
    })
}

/// `k8s/examples/existing-deployment/`: the team's own `orders` with the veto-sidecar
/// component, rendered once.
pub fn existing() -> &'static Rendered {
    static RENDERED: OnceLock<Rendered> = OnceLock::new();
    RENDERED.get_or_init(|| Rendered::new(EXISTING, EXISTING_NAMES))
}

pub const EXISTING: &str = "k8s/examples/existing-deployment";
const EXISTING_NAMES: Names = Names {
    deployment: "orders",
    network_policy: "orders-veto",
    serving: "veto-envoy",
    serving_port: "veto-http",
    volumes_written_in: "k8s/examples/existing-deployment/veto-target/volumes.yaml",
};

/// Runs `kubectl kustomize` on `dir` and parses what it prints.
pub fn kustomize(dir: &Path) -> (String, Vec<Value>) {
    let mut command = Command::new(tool("kubectl", KUBECTL_HINT));
    command.arg("kustomize").arg(dir);
    let run = run_command(command);
    let text = run.success().to_owned();
    let objects = yaml_serde::Deserializer::from_str(&text)
        .map(|document| {
            Value::deserialize(document).unwrap_or_else(|e| {
                panic!(
                    "`kubectl kustomize {}` printed bad YAML: {e}",
                    dir.display()
                )
            })
        })
        .filter(|object| !object.is_null())
        .collect();
    (text, objects)
}

impl Rendered {
    fn new(dir: &'static str, names: Names) -> Rendered {
        let (text, objects) = kustomize(&repo().join(dir));
        Rendered {
            dir,
            names,
            text,
            objects,
        }
    }

    /// The one object of `kind` named `name`.
    pub fn object(&self, kind: &str, name: &str) -> &Value {
        let mut found = self.objects.iter().filter(|o| {
            o["kind"].as_str() == Some(kind) && o["metadata"]["name"].as_str() == Some(name)
        });
        let object = found
            .next()
            .unwrap_or_else(|| panic!("{}: no {kind} named {name}", self.dir));
        assert!(
            found.next().is_none(),
            "{}: two {kind}s named {name}",
            self.dir
        );
        object
    }

    pub fn deployment(&self) -> &Value {
        self.object("Deployment", self.names.deployment)
    }

    /// The pod template's spec.
    pub fn pod(&self) -> &Value {
        &self.deployment()["spec"]["template"]["spec"]
    }

    /// The container (init or regular) named `name`.
    pub fn container(&self, name: &str) -> &Value {
        all_containers(self.pod())
            .find(|c| c["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("{}: no container named {name}", self.dir))
    }

    /// The volume mount of `container` that holds `path`, and its volume.
    pub fn volume_for(&self, container: &Value, path: &str) -> (String, &Value) {
        let mount = sequence(&container["volumeMounts"])
            .iter()
            .filter(|m| {
                m["mountPath"]
                    .as_str()
                    .is_some_and(|dir| Path::new(path).starts_with(dir))
            })
            .max_by_key(|m| m["mountPath"].as_str().map_or(0, str::len))
            .unwrap_or_else(|| {
                panic!(
                    "{}: no volume of container {} provides {path}",
                    self.dir,
                    container["name"].as_str().unwrap_or("?")
                )
            });
        let volume_name = mount["name"].as_str().expect("a mount names its volume");
        let volume = sequence(&self.pod()["volumes"])
            .iter()
            .find(|v| v["name"].as_str() == Some(volume_name))
            .unwrap_or_else(|| panic!("{}: no volume named {volume_name}", self.dir));
        let mount_path = mount["mountPath"].as_str().expect("mountPath").to_owned();
        (mount_path, volume)
    }

    /// The contents of the file `path` as `container` sees it: the key of the ConfigMap
    /// mounted as the directory that holds it.
    pub fn file_seen_by(&self, container: &Value, path: &str) -> String {
        let (mount, volume) = self.volume_for(container, path);
        let name = volume["configMap"]["name"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: {path} is not from a ConfigMap", self.dir));
        let key = Path::new(path)
            .strip_prefix(&mount)
            .expect("the mount holds the path")
            .to_str()
            .expect("UTF-8 path");
        self.object("ConfigMap", name)["data"][key]
            .as_str()
            .unwrap_or_else(|| panic!("{}: ConfigMap {name} has no key {key}", self.dir))
            .to_owned()
    }

    /// The veto config in its ConfigMap, at the path veto's `--config` names.
    pub fn veto_config(&self) -> Value {
        let veto = self.container("veto");
        yaml_serde::from_str(&self.file_seen_by(veto, arg_after(veto, "--config")))
            .unwrap_or_else(|e| panic!("{}: the veto config is not YAML: {e}", self.dir))
    }

    /// The Envoy config in its ConfigMap, at the path Envoy's `--config-path` names.
    pub fn envoy_config(&self) -> String {
        let envoy = self.container(self.names.serving);
        self.file_seen_by(envoy, arg_after(envoy, "--config-path"))
    }

    /// Writes the veto container's volumes under `root` as the kubelet mounts them under
    /// `/` (ConfigMap keys as files, the Secret's token as an operator creates it, emptyDirs
    /// as directories), for `veto check-config --root ROOT`; returns where veto's config
    /// (`--config`) lies in that tree. Panics when the config names an absolute path that
    /// no volume of the veto container provides: that path would fail in the pod.
    pub fn lay_out_veto_files(&self, root: &Path) -> PathBuf {
        let veto = self.container("veto");
        let mounts: Vec<String> = sequence(&veto["volumeMounts"])
            .iter()
            .map(|m| m["mountPath"].as_str().expect("mountPath").to_owned())
            .collect();
        for mount in &mounts {
            let dir = under(root, mount);
            fs::create_dir_all(&dir).expect("create a mount directory");
            let (_, volume) = self.volume_for(veto, mount);
            if let Some(name) = volume["configMap"]["name"].as_str() {
                write_keys(&dir, self.object("ConfigMap", name));
            } else if let Some(name) = volume["secret"]["secretName"].as_str() {
                write_keys(&dir, self.object("Secret", name));
                // The base ships the Secret without a value; the operator adds the token
                // under this key (k8s/base/admin-token-secret.yaml).
                fs::write(dir.join("admin-token"), "test-admin-token\n")
                    .expect("write the admin token");
            } else {
                assert!(
                    volume["emptyDir"].is_mapping(),
                    "{}: unexpected volume {volume:?}",
                    self.dir
                );
            }
        }
        assert_paths_mounted(&self.veto_config(), "", &mounts);
        under(root, arg_after(veto, "--config"))
    }
}

/// Runs kubernetes-validate on the rendered manifests for the oldest and newest supported
/// Kubernetes; panics on any error; returns the warnings (kinds it has no schema for).
pub fn validate_schemas(rendered: &Rendered) -> Vec<String> {
    let dir = tempfile::Builder::new()
        .prefix("k8s-rendered-")
        .tempdir()
        .expect("create a temp dir for the rendered manifests");
    let file = dir.path().join("rendered.yaml");
    fs::write(&file, &rendered.text).expect("write the rendered manifests");

    let mut command = Command::new(tool("kubernetes-validate", KUBERNETES_VALIDATE_HINT));
    command
        .args(["--strict", "-k", OLDEST_KUBERNETES, "-k", NEWEST_KUBERNETES])
        .arg(&file);
    let run = run_command(command);
    run.assert_exit(0);
    assert!(!run.stdout.contains("ERROR"), "{}", run.output());
    let lines = |prefix: &str| -> Vec<String> {
        run.stdout
            .lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_owned)
            .collect()
    };
    let (passed, warnings) = (lines("INFO"), lines("WARN"));
    assert_eq!(
        passed.len() + warnings.len(),
        2 * rendered.objects.len(),
        "{}: every object is checked against both Kubernetes versions\n{}",
        rendered.dir,
        run.output()
    );
    warnings
}

/// Asserts that every string in `value` that is an absolute path lies in one of `mounts`.
/// `field` names the position, for errors.
fn assert_paths_mounted(value: &Value, field: &str, mounts: &[String]) {
    match value {
        Value::String(s) if s.starts_with('/') => {
            assert!(
                mounts.iter().any(|m| Path::new(s.as_str()).starts_with(m)),
                "the pod's veto config names {s} ({field}), which no volume of the veto \
                 container provides (mounts: {mounts:?})"
            );
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                assert_paths_mounted(item, &format!("{field}[{i}]"), mounts);
            }
        }
        Value::Mapping(map) => {
            for (key, item) in map {
                let key = key.as_str().unwrap_or("?");
                let field = if field.is_empty() {
                    key.to_owned()
                } else {
                    format!("{field}.{key}")
                };
                assert_paths_mounted(item, &field, mounts);
            }
        }
        _ => {}
    }
}

/// Writes each key of a ConfigMap's or Secret's `data` (and a ConfigMap's `binaryData`)
/// into `dir`, as the kubelet does.
fn write_keys(dir: &Path, object: &Value) {
    let base64 = base64::engine::general_purpose::STANDARD;
    let is_secret = object["kind"].as_str() == Some("Secret");
    for (field, encoded) in [("data", is_secret), ("binaryData", true)] {
        let Some(map) = object[field].as_mapping() else {
            continue;
        };
        for (key, content) in map {
            let key = key.as_str().expect("string keys");
            let content = content.as_str().expect("string values");
            let bytes = if encoded {
                base64.decode(content).expect("base64 data")
            } else {
                content.as_bytes().to_vec()
            };
            fs::write(dir.join(key), bytes).expect("write a mounted key");
        }
    }
}

/// The ext_authz HTTP filter of the first listener of an Envoy config.
pub fn ext_authz_filter(config: &Value) -> Option<&Value> {
    let listener = &config["static_resources"]["listeners"][0];
    let manager = &listener["filter_chains"][0]["filters"][0]["typed_config"];
    sequence(&manager["http_filters"])
        .iter()
        .find(|f| f["name"].as_str() == Some("envoy.filters.http.ext_authz"))
}

pub fn all_containers(pod: &Value) -> impl Iterator<Item = &Value> {
    sequence(&pod["initContainers"])
        .iter()
        .chain(sequence(&pod["containers"]))
}

/// The items of a YAML sequence; none when the field is absent.
pub fn sequence(value: &Value) -> &[Value] {
    value.as_sequence().map_or(&[], Vec::as_slice)
}

/// The argument after `flag` in a container's `args`.
fn arg_after<'a>(container: &'a Value, flag: &str) -> &'a str {
    let args = sequence(&container["args"]);
    args.iter()
        .position(|a| a.as_str() == Some(flag))
        .and_then(|i| args.get(i + 1))
        .and_then(Value::as_str)
        .unwrap_or_else(|| {
            panic!(
                "container {:?} has no `{flag} VALUE` in its args",
                container["name"]
            )
        })
}

/// A duration like `0.5s` or `250ms`, in seconds.
pub fn seconds(duration: &str) -> f64 {
    let parsed = if let Some(ms) = duration.strip_suffix("ms") {
        ms.parse::<f64>().map(|ms| ms / 1000.0)
    } else {
        duration.trim_end_matches('s').parse::<f64>()
    };
    parsed.unwrap_or_else(|_| panic!("`{duration}` is not a duration"))
}

/// `absolute` (an in-pod path) under `root`.
pub fn under(root: &Path, absolute: &str) -> PathBuf {
    root.join(absolute.trim_start_matches('/'))
}

/// Asserts that `envoy --mode validate` accepts the Envoy config `text`.
pub fn envoy_validates(text: &str) {
    let dir = tempfile::Builder::new()
        .prefix("envoy-configmap-")
        .tempdir()
        .expect("create a temp dir for the Envoy config");
    let file = dir.path().join("envoy.yaml");
    fs::write(&file, text).expect("write the Envoy config");

    let mut command = Command::new(envoy_binary());
    command
        .args(["--mode", "validate", "--disable-hot-restart", "-l", "error"])
        // Without hot restart Envoy maps no shared memory, so the id only has to be valid;
        // unique, like the harness's, in case that ever changes.
        .arg("--base-id")
        .arg(unique_base_id().to_string())
        .arg("-c")
        .arg(&file);
    let run = run_command(command);
    assert!(run.success().contains("OK"), "{}", run.output());
}

/// The YAML file `path`, parsed.
pub fn read_yaml(path: &Path) -> Value {
    yaml_serde::from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const KUBERNETES_VALIDATE_HINT: &str = "run the README's test command, which installs it \
     with `pip install kubernetes-validate==1.37.0` into .venv/";
const KUBECTL_HINT: &str =
    "install kubectl (it renders kustomizations offline: `kubectl kustomize DIR`)";
