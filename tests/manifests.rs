//! The Kubernetes deliverables (`k8s/`) as a platform engineer meets them: rendered offline
//! with `kubectl kustomize`, checked against the Kubernetes API schemas, and the configs
//! embedded in their ConfigMaps checked by the tools that will read them in the pod
//! (`veto check-config`, `veto check-rules`, `envoy --mode validate`). The rest asserts the
//! properties an operator relies on without reading every line: veto starts before Envoy,
//! rules update in place, every container is locked down, the admin port is fenced off, and
//! nothing fails open.
//!
//! How the veto config is checked: it names absolute in-pod paths (`/etc/veto/...`). The test
//! lays the veto container's volumes out under a temp dir exactly where its `volumeMounts`
//! put them (see `common/k8s.rs`) and runs `veto check-config --root` on the config as it
//! lies there. A path that no volume provides fails here, not in a rollout.
//!
//! Nothing is skipped: without `kubectl` or `kubernetes-validate` these tests fail and say
//! how to get them (the README's test command installs kubernetes-validate into `.venv/`).

use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use serde::Deserialize;
use yaml_serde::Value;

use crate::common::k8s::{
    EXISTING, Rendered, all_containers, base, envoy_validates, existing, ext_authz_filter, istio,
    kustomize, read_yaml, seconds, sequence, under, validate_schemas,
};
use crate::common::{copy_tree, files_under, read, relative, repo, run_command, run_veto};

/// The custom resources of the Istio variant: the Kubernetes schemas cannot check them, so
/// `the_istio_variant_asks_veto_in_the_pod_and_fails_closed` reads them instead.
const ISTIO_KINDS: [&str; 2] = ["ServiceEntry", "AuthorizationPolicy"];

#[test]
fn the_kustomize_base_passes_the_kubernetes_schemas_strictly_from_1_29_to_1_37() {
    let warnings = validate_schemas(base());
    assert!(
        warnings.is_empty(),
        "every kind in k8s/ should have a Kubernetes schema:\n{}",
        warnings.join("\n")
    );
}

#[test]
fn the_istio_variant_passes_the_schemas_and_only_istio_kinds_go_unchecked() {
    let warnings = validate_schemas(istio());
    for warning in &warnings {
        assert!(
            ISTIO_KINDS
                .iter()
                .any(|kind| warning.contains(&format!("kind {kind} "))),
            "only Istio's custom resources may lack a schema: {warning}"
        );
    }
}

#[test]
fn the_veto_config_and_rules_in_the_configmaps_pass_check_config_and_check_rules() {
    for rendered in [base(), istio(), existing()] {
        let dir = tempfile::Builder::new()
            .prefix("veto-pod-")
            .tempdir()
            .expect("create a temp dir for the pod's files");
        let root = dir.path();
        let config_path = rendered.lay_out_veto_files(root);

        let run = run_veto([
            OsStr::new("check-config"),
            OsStr::new("--root"),
            root.as_os_str(),
            config_path.as_os_str(),
        ]);
        let out = run.success();
        assert!(out.contains("ok"), "{}: {out}", rendered.dir);

        let config = rendered.veto_config();
        let rules = config["revocation"]["file"]
            .as_str()
            .expect("the pod's veto config names a rules file (revocation.file)");
        let run = run_veto([OsStr::new("check-rules"), under(root, rules).as_os_str()]);
        let out = run.success();
        assert!(out.contains("ok"), "{}: {out}", rendered.dir);
    }
}

#[test]
fn the_envoy_config_in_its_configmap_passes_envoy_validate() {
    for rendered in [base(), existing()] {
        envoy_validates(&rendered.envoy_config());
    }
}

#[test]
fn the_pods_envoy_config_is_the_tested_envoy_yaml_with_the_listener_on_the_pod_ip() {
    for rendered in [base(), existing()] {
        let in_pod: Value = yaml_serde::from_str(&rendered.envoy_config())
            .expect("the Envoy config in its ConfigMap is YAML");
        assert!(
            in_pod == tested_envoy_on_the_pod_ip(),
            "{}: the pod's Envoy config drifted from envoy/envoy.yaml (the config the \
             integration tests run): keep them equal except for the listener address",
            rendered.dir
        );
    }
}

/// envoy/envoy.yaml, with the one intended difference of a pod's copy: the listener is
/// reached on the pod IP.
fn tested_envoy_on_the_pod_ip() -> Value {
    let mut tested = read_yaml(&repo().join("envoy/envoy.yaml"));
    let listener_address =
        &mut tested["static_resources"]["listeners"][0]["address"]["socket_address"]["address"];
    assert_eq!(listener_address.as_str(), Some("127.0.0.1"));
    *listener_address = Value::String("0.0.0.0".into());
    tested
}

#[test]
fn every_ext_authz_filter_fails_closed_with_503_and_a_short_timeout() {
    let configs = [
        ("the Envoy ConfigMap".to_owned(), base().envoy_config()),
        (
            "the Envoy ConfigMap of the existing-deployment example".to_owned(),
            existing().envoy_config(),
        ),
        (
            "envoy/envoy.yaml".to_owned(),
            read(&repo().join("envoy/envoy.yaml")),
        ),
        (
            "envoy/envoy-uds.yaml".to_owned(),
            read(&repo().join("envoy/envoy-uds.yaml")),
        ),
    ];
    for (name, text) in configs {
        let config: Value = yaml_serde::from_str(&text).expect("Envoy configs are YAML");
        let filter = ext_authz_filter(&config).unwrap_or_else(|| panic!("{name}: no ext_authz"));
        let typed = &filter["typed_config"];
        assert_eq!(
            typed["failure_mode_allow"].as_bool(),
            Some(false),
            "{name}: ext_authz must fail closed"
        );
        assert_eq!(
            typed["status_on_error"]["code"].as_str(),
            Some("ServiceUnavailable"),
            "{name}: an undecidable Check must be a 503, not a 403 or a 401"
        );
        assert_eq!(typed["include_peer_certificate"].as_bool(), Some(false));
        let timeout = typed["grpc_service"]["timeout"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: the Check needs an explicit timeout"));
        assert!(seconds(timeout) <= 1.0, "{name}: timeout {timeout}");
        let patterns = typed["allowed_headers"]["patterns"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{name}: send veto only the headers it needs"));
        let headers: Vec<&str> = patterns
            .iter()
            .filter_map(|p| p["exact"].as_str())
            .collect();
        assert_eq!(headers, ["authorization"], "{name}");
    }
}

#[test]
fn veto_is_a_native_sidecar_that_must_be_ready_before_envoy_and_the_app_start() {
    for rendered in [base(), istio(), existing()] {
        let pod = rendered.pod();
        let veto = rendered.container("veto");
        let is_init = sequence(&pod["initContainers"])
            .iter()
            .any(|c| c["name"].as_str() == Some("veto"));
        assert!(is_init, "{}: veto must be an init container", rendered.dir);
        assert_eq!(
            veto["restartPolicy"].as_str(),
            Some("Always"),
            "{}: veto must be a native sidecar (restartPolicy: Always)",
            rendered.dir
        );
        // The kubelet starts the next containers only once a sidecar's startup probe passes.
        assert_eq!(
            veto["startupProbe"]["httpGet"]["path"].as_str(),
            Some("/readyz"),
            "{}: the startup probe is what holds Envoy back until veto is ready",
            rendered.dir
        );
    }
    for rendered in [base(), existing()] {
        let envoy_is_regular = sequence(&rendered.pod()["containers"])
            .iter()
            .any(|c| c["name"].as_str() == Some(rendered.names.serving));
        assert!(
            envoy_is_regular,
            "{}: Envoy is a regular container, started after veto",
            rendered.dir
        );
    }
}

#[test]
fn the_kubelet_probes_the_admin_listener_while_check_stays_on_loopback() {
    for rendered in [base(), existing()] {
        the_kubelet_probes_the_admin_listener_of(rendered);
    }
}

fn the_kubelet_probes_the_admin_listener_of(rendered: &Rendered) {
    let veto = rendered.container("veto");
    let config = rendered.veto_config();

    let grpc = config["grpc"]["listen"]
        .as_str()
        .expect("grpc.listen is set");
    assert!(
        grpc.starts_with("127.0.0.1:") || grpc.starts_with("unix:"),
        "Check must stay reachable from inside the pod only, not {grpc}"
    );
    let admin = config["admin"]["listen"]
        .as_str()
        .expect("admin.listen is set");
    let (host, port) = admin.rsplit_once(':').expect("admin.listen is HOST:PORT");
    assert!(
        !host.starts_with("127.") && host != "[::1]",
        "the kubelet probes the pod IP: admin.listen {admin} cannot be on loopback"
    );
    let port: u64 = port.parse().expect("admin.listen has a numeric port");

    for (probe, path) in [
        ("startupProbe", "/readyz"),
        ("readinessProbe", "/readyz"),
        ("livenessProbe", "/healthz"),
    ] {
        let get = &veto[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe}");
        // A number, not a port name: Istio's probe rewriting compares numbers only.
        assert_eq!(
            get["port"].as_u64(),
            Some(port),
            "{probe} goes to admin.listen"
        );
    }
}

#[test]
fn the_rules_and_keys_are_mounted_as_directories_that_update_in_place() {
    for rendered in [base(), istio(), existing()] {
        let pod = rendered.pod();
        for container in all_containers(pod) {
            for mount in sequence(&container["volumeMounts"]) {
                assert!(
                    mount["subPath"].is_null() && mount["subPathExpr"].is_null(),
                    "{}: the kubelet never updates a subPath mount: {mount:?}",
                    rendered.dir
                );
            }
        }
        let veto = rendered.container("veto");
        let config = rendered.veto_config();
        // The files veto watches: rules, admin token, and key files (none for an issuer that
        // fetches its keys from a jwks_uri).
        let mut hot_files = vec![
            config["revocation"]["file"].as_str().expect("a rules file"),
            config["admin"]["token_file"]
                .as_str()
                .expect("an admin token"),
        ];
        for issuer in sequence(&config["issuers"]) {
            hot_files.extend(
                ["jwks_file", "hmac_secret_file"]
                    .map(|k| issuer[k].as_str())
                    .into_iter()
                    .flatten(),
            );
        }
        // The volumes as written, before kustomize renames generated ConfigMaps.
        let written = read_yaml(&repo().join(rendered.names.volumes_written_in));
        for file in hot_files {
            let (mount, volume) = rendered.volume_for(veto, file);
            let source_name = |v: &Value| {
                v["configMap"]["name"]
                    .as_str()
                    .or(v["secret"]["secretName"].as_str())
                    .map(str::to_owned)
            };
            let rendered_name =
                source_name(volume).expect("hot-reloaded files come from a ConfigMap or a Secret");
            let written_name = sequence(&written["spec"]["template"]["spec"]["volumes"])
                .iter()
                .find(|v| v["name"] == volume["name"])
                .and_then(source_name);
            // The same name as written, no content-hash suffix: an edit then changes the
            // object every running pod mounts, and the kubelet swaps the files in place
            // (veto re-reads them). With a hash suffix, an edit would create a new
            // ConfigMap and roll the Deployment instead.
            assert_eq!(
                Some(&rendered_name),
                written_name.as_ref(),
                "{}: {file} (mounted at {mount}) must come from an object whose name does \
                 not change with its content (configMapGenerator: disableNameSuffixHash)",
                rendered.dir
            );
        }
    }
}

#[test]
fn every_container_runs_non_root_read_only_and_without_capabilities() {
    for rendered in [base(), istio()] {
        let pod = rendered.pod();
        let security = &pod["securityContext"];
        assert_eq!(security["runAsNonRoot"].as_bool(), Some(true));
        assert_eq!(
            security["seccompProfile"]["type"].as_str(),
            Some("RuntimeDefault")
        );
        assert_eq!(
            pod["automountServiceAccountToken"].as_bool(),
            Some(false),
            "nothing in the pod talks to the Kubernetes API"
        );
        for container in all_containers(pod) {
            let name = container["name"].as_str().unwrap_or("?");
            let security = &container["securityContext"];
            assert_eq!(
                security["readOnlyRootFilesystem"].as_bool(),
                Some(true),
                "{}: {name}",
                rendered.dir
            );
            assert_eq!(
                security["allowPrivilegeEscalation"].as_bool(),
                Some(false),
                "{}: {name}",
                rendered.dir
            );
            let drops: Vec<&str> = sequence(&security["capabilities"]["drop"])
                .iter()
                .filter_map(Value::as_str)
                .collect();
            assert!(drops.contains(&"ALL"), "{}: {name}", rendered.dir);
            assert!(
                container["resources"]["requests"]["memory"].is_string()
                    && container["resources"]["limits"]["memory"].is_string(),
                "{}: {name} needs memory requests and limits",
                rendered.dir
            );
        }
    }
}

#[test]
fn the_base_ships_no_admin_token() {
    for (rendered, name) in [
        (base(), "veto-admin-token"),
        (existing(), "orders-veto-admin-token"),
    ] {
        let secret = rendered.object("Secret", name);
        assert!(
            secret["data"].is_null() && secret["stringData"].is_null(),
            "{}: a token in the repository is a token everybody has: the operator creates it",
            rendered.dir
        );
    }
}

#[test]
fn only_namespaces_allowed_to_revoke_reach_the_admin_port() {
    for rendered in [base(), istio(), existing()] {
        let names = &rendered.names;
        let policy = rendered.object("NetworkPolicy", names.network_policy);
        let pod_labels = &rendered.deployment()["spec"]["template"]["metadata"]["labels"];
        for (key, value) in policy["spec"]["podSelector"]["matchLabels"]
            .as_mapping()
            .expect("the NetworkPolicy selects the pods by label")
        {
            assert_eq!(&pod_labels[key.as_str().expect("label key")], value);
        }
        let types: Vec<&str> = sequence(&policy["spec"]["policyTypes"])
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(types.contains(&"Ingress"), "{}", rendered.dir);

        let veto = rendered.container("veto");
        let admin_port = veto["ports"][0]["name"].as_str().expect("named admin port");
        let mut admin_rules = 0;
        for rule in sequence(&policy["spec"]["ingress"]) {
            let ports: Vec<&Value> = sequence(&rule["ports"])
                .iter()
                .map(|p| &p["port"])
                .collect();
            assert!(
                !ports.is_empty(),
                "every ingress rule names its ports: {rule:?}"
            );
            if ports.iter().any(|p| p.as_str() == Some(admin_port)) {
                admin_rules += 1;
                let from = sequence(&rule["from"]);
                assert!(
                    !from.is_empty()
                        && from.iter().all(|peer| {
                            peer["namespaceSelector"]["matchLabels"].is_mapping()
                                && peer["ipBlock"].is_null()
                        }),
                    "{}: the admin port is for labelled namespaces only: {rule:?}",
                    rendered.dir
                );
            } else {
                assert_eq!(
                    ports.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
                    [Some(names.serving_port)],
                    "{}: open to everyone is the Service's port, nothing else",
                    rendered.dir
                );
            }
        }
        assert_eq!(admin_rules, 1, "{}", rendered.dir);

        // The Service and the open rule lead to the same port: Envoy's listener, or the
        // app's port (behind istio-proxy) in the Istio variant.
        let service = rendered.object("Service", names.deployment);
        assert_eq!(
            service["spec"]["ports"][0]["targetPort"].as_str(),
            Some(names.serving_port),
            "{}",
            rendered.dir
        );
        let serving = names.serving;
        let named = sequence(&rendered.container(serving)["ports"])
            .iter()
            .any(|p| p["name"].as_str() == Some(names.serving_port));
        assert!(
            named,
            "{}: `{}` is {serving}'s port",
            rendered.dir, names.serving_port
        );
    }
}

#[test]
fn the_istio_variant_asks_veto_in_the_pod_and_fails_closed() {
    let rendered = istio();
    let pod = rendered.pod();
    assert!(
        all_containers(pod).all(|c| c["name"].as_str() != Some("envoy")),
        "istio-proxy replaces our Envoy"
    );
    assert!(
        !rendered.objects.iter().any(|o| o["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("envoy-config"))),
        "the Envoy ConfigMap has no reader under Istio"
    );

    let policy = rendered.object("AuthorizationPolicy", "app-veto");
    assert_eq!(policy["spec"]["action"].as_str(), Some("CUSTOM"));
    let provider = policy["spec"]["provider"]["name"]
        .as_str()
        .expect("a CUSTOM policy names its provider");
    let policy_ports: Vec<&str> =
        sequence(&policy["spec"]["rules"][0]["to"][0]["operation"]["ports"])
            .iter()
            .filter_map(Value::as_str)
            .collect();
    let app_port = rendered.container("app")["ports"][0]["containerPort"]
        .as_u64()
        .expect("the app's port")
        .to_string();
    assert_eq!(
        policy_ports,
        [app_port.as_str()],
        "only the app is behind veto"
    );

    let mesh = read_yaml(&repo().join("k8s/istio/mesh-config.yaml"));
    let providers = sequence(&mesh["meshConfig"]["extensionProviders"]);
    let named = providers
        .iter()
        .find(|p| p["name"].as_str() == Some(provider))
        .unwrap_or_else(|| panic!("mesh-config.yaml defines no provider `{provider}`"));
    let grpc = &named["envoyExtAuthzGrpc"];
    assert_eq!(grpc["failOpen"].as_bool(), Some(false), "fail closed");
    assert_eq!(grpc["statusOnError"].as_str(), Some("503"));
    let timeout = grpc["timeout"]
        .as_str()
        .expect("an explicit timeout: Istio's default is 600 s");
    assert!(seconds(timeout) <= 1.0, "timeout {timeout}");

    let entry = rendered.object("ServiceEntry", "veto-local");
    let service = grpc["service"].as_str().expect("provider service");
    let hosts: Vec<&str> = sequence(&entry["spec"]["hosts"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(hosts, [service], "the provider points at the ServiceEntry");
    assert_eq!(entry["spec"]["resolution"].as_str(), Some("STATIC"));
    assert_eq!(
        entry["spec"]["endpoints"][0]["address"].as_str(),
        Some("127.0.0.1"),
        "veto in the same pod"
    );
    assert_eq!(entry["spec"]["ports"][0]["protocol"].as_str(), Some("GRPC"));

    let veto = rendered.container("veto");
    let config = rendered.veto_config();
    let check_port = config["grpc"]["listen"]
        .as_str()
        .and_then(|l| l.strip_prefix("127.0.0.1:"))
        .expect("Check on 127.0.0.1");
    assert_eq!(
        grpc["port"].as_u64().map(|p| p.to_string()).as_deref(),
        Some(check_port)
    );
    assert_eq!(
        entry["spec"]["ports"][0]["number"]
            .as_u64()
            .map(|p| p.to_string())
            .as_deref(),
        Some(check_port)
    );

    // The admin port stays out of istio-proxy's capture: probes and revokers reach veto
    // directly, before istio-proxy runs and without a user's JWT.
    let admin_port = veto["ports"][0]["containerPort"]
        .as_u64()
        .expect("admin port");
    let excluded = rendered.deployment()["spec"]["template"]["metadata"]["annotations"]
        ["traffic.sidecar.istio.io/excludeInboundPorts"]
        .as_str()
        .unwrap_or_default();
    assert!(
        excluded
            .split(',')
            .any(|p| p.trim() == admin_port.to_string()),
        "excludeInboundPorts must list {admin_port}"
    );
}

// ---- veto added to a Deployment a team already has (k8s/components/veto-sidecar) ----

#[test]
fn the_existing_deployment_example_passes_the_kubernetes_schemas_strictly() {
    let warnings = validate_schemas(existing());
    assert!(warnings.is_empty(), "{}", warnings.join("\n"));
}

#[test]
fn the_teams_deployment_gains_veto_and_envoy_and_keeps_its_own_containers_and_pod_settings() {
    let rendered = existing();
    let written = team_object("Deployment", "orders");
    let deployment = rendered.deployment();
    let pod = rendered.pod();

    let containers = sequence(&pod["containers"]);
    assert_eq!(
        containers.first().and_then(|c| c["name"].as_str()),
        Some("orders"),
        "the team's container stays first, the default of `kubectl logs` and `exec`"
    );
    assert_eq!(
        containers.last().and_then(|c| c["name"].as_str()),
        Some(rendered.names.serving),
        "Envoy is appended after the team's containers"
    );
    assert_eq!(
        rendered.container("veto")["image"].as_str(),
        Some("registry.example.com/veto:0.1.0"),
        "the overlay's `images:` names the image the user built and pushed"
    );

    // Take out what veto added: what is left is the Deployment exactly as the team wrote it.
    let added_volumes: Vec<Value> =
        sequence(
            &read_yaml(&repo().join(rendered.names.volumes_written_in))["spec"]["template"]["spec"]
                ["volumes"],
        )
        .iter()
        .map(|v| v["name"].clone())
        .collect();
    let mut without_veto = deployment.clone();
    let spec = &mut without_veto["spec"]["template"]["spec"];
    for (field, added) in [
        ("initContainers", vec![Value::from("veto")]),
        ("containers", vec![Value::from(rendered.names.serving)]),
        ("volumes", added_volumes),
    ] {
        let items = spec[field]
            .as_sequence_mut()
            .unwrap_or_else(|| panic!("the pod has {field}"));
        let before = items.len();
        items.retain(|item| !added.contains(&item["name"]));
        assert_eq!(before - items.len(), added.len(), "veto adds {added:?}");
    }
    remove_selection_annotation(&mut without_veto);
    assert!(
        without_veto == *written,
        "the team's Deployment changed beyond veto's containers and volumes:\n{}",
        yaml_serde::to_string(&without_veto).unwrap_or_default()
    );
}

#[test]
fn the_teams_service_now_leads_to_envoy_and_is_otherwise_unchanged() {
    let rendered = existing();
    let service = rendered.object("Service", "orders");
    let target = service["spec"]["ports"][0]["targetPort"].as_str();
    let envoy_port = rendered.container(rendered.names.serving)["ports"][0]["name"].as_str();
    assert!(target.is_some() && target == envoy_port, "{service:?}");

    let mut as_written = service.clone();
    remove_selection_annotation(&mut as_written);
    as_written["spec"]["ports"][0]["targetPort"] = Value::from("http");
    assert!(
        as_written == *team_object("Service", "orders"),
        "only the targetPort changes: {service:?}"
    );
}

#[test]
fn the_example_runs_veto_and_envoy_non_root_and_read_only_without_the_teams_pod_settings() {
    let rendered = existing();
    assert!(
        rendered.pod()["securityContext"]
            == team_object("Deployment", "orders")["spec"]["template"]["spec"]["securityContext"],
        "the pod's securityContext stays the team's"
    );
    for name in ["veto", rendered.names.serving] {
        let security = &rendered.container(name)["securityContext"];
        assert_eq!(security["runAsNonRoot"].as_bool(), Some(true), "{name}");
        assert_eq!(security["runAsUser"].as_u64(), Some(65532), "{name}");
        assert_eq!(
            security["readOnlyRootFilesystem"].as_bool(),
            Some(true),
            "{name}"
        );
        assert_eq!(
            security["allowPrivilegeEscalation"].as_bool(),
            Some(false),
            "{name}"
        );
        assert_eq!(
            security["seccompProfile"]["type"].as_str(),
            Some("RuntimeDefault"),
            "{name}"
        );
        assert_eq!(
            security["capabilities"]["drop"][0].as_str(),
            Some("ALL"),
            "{name}"
        );
    }
}

/// A user copies the example for a second app (`payments`) in the same namespace, where
/// the base's `app` runs too: the three render together without two objects of one name.
#[test]
fn two_apps_with_veto_and_the_base_share_a_namespace_without_a_name_collision() {
    let dir = tempfile::Builder::new()
        .prefix("k8s-two-apps-")
        .tempdir()
        .expect("create a temp dir for the overlays");
    let payments = dir.path().join("payments");
    copy_tree(&repo().join(EXISTING), &payments);
    // kustomize takes relative paths only.
    let component = relative(&payments, &repo().join("k8s/components/veto-sidecar"));
    for file in files_under(&payments) {
        let text = read(&file)
            .replace("orders", "payments")
            .replace("../../components/veto-sidecar", &component);
        fs::write(&file, text).expect("write the copied overlay");
    }
    fs::rename(payments.join("orders.yaml"), payments.join("payments.yaml"))
        .expect("rename the team's manifests");
    fs::write(
        dir.path().join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
             resources:\n  - {}\n  - {}\n  - payments\n",
            relative(dir.path(), &repo().join("k8s")),
            relative(dir.path(), &repo().join(EXISTING)),
        ),
    )
    .expect("write the namespace's kustomization");

    let (_, objects) = kustomize(dir.path());
    let mut seen = std::collections::BTreeSet::new();
    for object in &objects {
        let id = (
            object["kind"].as_str().unwrap_or("?"),
            object["metadata"]["name"].as_str().unwrap_or("?"),
        );
        assert!(seen.insert(id), "two objects named {id:?} in one namespace");
    }
    // Each app's pods mount their own app's veto objects.
    for app in ["orders", "payments"] {
        let deployment = objects
            .iter()
            .find(|o| {
                o["kind"].as_str() == Some("Deployment")
                    && o["metadata"]["name"].as_str() == Some(app)
            })
            .unwrap_or_else(|| panic!("no Deployment {app}"));
        for volume in sequence(&deployment["spec"]["template"]["spec"]["volumes"]) {
            let source = volume["configMap"]["name"]
                .as_str()
                .or(volume["secret"]["secretName"].as_str());
            if let Some(source) = source {
                assert!(
                    source.starts_with(&format!("{app}-veto-")),
                    "{app}: {source}"
                );
            }
        }
    }
}

/// An object of the team's own manifests (orders.yaml of the example), as written.
fn team_object(kind: &str, name: &str) -> &'static Value {
    static WRITTEN: OnceLock<Vec<Value>> = OnceLock::new();
    let objects = WRITTEN.get_or_init(|| {
        let text = read(&repo().join(EXISTING).join("orders.yaml"));
        yaml_serde::Deserializer::from_str(&text)
            .map(|document| Value::deserialize(document).expect("orders.yaml is YAML"))
            .collect()
    });
    objects
        .iter()
        .find(|o| o["kind"].as_str() == Some(kind) && o["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("orders.yaml has no {kind} {name}"))
}

/// Removes the `veto-sidecar: inject` annotation by which the overlay selects an object
/// (and the annotations map, when that was all it held).
fn remove_selection_annotation(object: &mut Value) {
    let metadata = object["metadata"]
        .as_mapping_mut()
        .expect("an object has metadata");
    let annotations = metadata
        .get_mut("annotations")
        .and_then(Value::as_mapping_mut)
        .expect("the selected object is annotated");
    assert_eq!(
        annotations
            .remove("veto-sidecar")
            .as_ref()
            .and_then(Value::as_str),
        Some("inject")
    );
    if annotations.is_empty() {
        metadata.remove("annotations");
    }
}

/// The image is built from the files `.dockerignore` lets through. Cargo reads every target
/// the manifest names (tests, benches) even for `cargo build --release`, so a context
/// without them fails the build: check that the allow-listed context is a valid package.
#[test]
fn the_docker_build_context_holds_everything_cargo_needs_to_read_the_manifest() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let context = tempfile::tempdir().expect("a temp dir for the build context");
    let ignore = fs::read_to_string(root.join(".dockerignore")).expect("read .dockerignore");
    for allowed in ignore.lines().filter_map(|l| l.trim().strip_prefix('!')) {
        copy_tree(&root.join(allowed), &context.path().join(allowed));
    }
    let dockerfile = fs::read_to_string(root.join("Dockerfile")).expect("read Dockerfile");
    let copy_lines: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
        .collect();
    for copied in ["Cargo.toml", "Cargo.lock", "src", "tests", "benches"] {
        assert!(
            copy_lines
                .iter()
                .any(|l| l.split_whitespace().any(|w| w == copied)),
            "the Dockerfile copies {copied} into the build stage"
        );
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let host = host_triple(&cargo);
    let mut command = Command::new(cargo);
    command
        // `fetch` resolves the whole manifest, targets included, as `build` does, but
        // compiles nothing (`metadata` does not check the target files). Offline, so the
        // test needs no second download; for the host only, because without `--target`
        // it wants every crate of Cargo.lock, including those of other platforms
        // (`valuable`, ...), which the build of these tests never downloaded: a fresh
        // machine has exactly what the host build needs.
        .args(["fetch", "--locked", "--offline", "--target", &host])
        .current_dir(context.path());
    run_command(command).assert_exit(0);
}

/// The platform `cargo` builds for by default (the `host:` line of `cargo -vV`).
fn host_triple(cargo: &OsStr) -> String {
    let mut command = Command::new(cargo);
    command.arg("-vV");
    let run = run_command(command);
    run.success()
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .unwrap_or_else(|| panic!("`cargo -vV` names no host:\n{}", run.output()))
        .trim()
        .to_owned()
}
