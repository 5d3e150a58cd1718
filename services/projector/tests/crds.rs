#![allow(clippy::unwrap_used)]
//! `k8s/crds/wasmbed.yaml` is generated from the Rust types: this fails when it drifts.
//! `wasmbed crds > k8s/crds/wasmbed.yaml` (or `WASMBED_BLESS=1` here) regenerates it.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use wasmbed_projector::crd::crd_yaml;

fn path() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../k8s/crds/wasmbed.yaml")
}

#[test]
fn the_crd_yaml_is_generated_from_the_types() {
    let yaml = crd_yaml().unwrap();
    if std::env::var_os("WASMBED_BLESS").is_some() {
        std::fs::write(path(), &yaml).unwrap();
    }
    let committed = std::fs::read_to_string(path()).unwrap_or_default();
    assert!(
        committed == yaml,
        "k8s/crds/wasmbed.yaml drifted from services/projector/src/crd.rs: run `wasmbed crds > k8s/crds/wasmbed.yaml`"
    );
}

#[test]
fn the_crds_are_one_group_with_status_and_useful_columns() {
    let yaml = crd_yaml().unwrap();
    let crds: Vec<CustomResourceDefinition> = yaml
        .split("\n---\n")
        .skip(1)
        .map(|doc| serde_saphyr::from_str(doc).unwrap())
        .collect();
    let kinds: Vec<&str> = crds.iter().map(|c| c.spec.names.kind.as_str()).collect();
    assert_eq!(kinds, ["Device", "Application", "Gateway"]);
    for crd in &crds {
        assert_eq!(crd.spec.group, "wasmbed.io");
        assert_eq!(crd.spec.scope, "Namespaced");
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.subresources.as_ref().unwrap().status.is_some());
        let schema = version
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap();
        let props = schema.properties.as_ref().unwrap();
        assert!(props.contains_key("spec") && props.contains_key("status"));
    }
    let columns = |kind: &str| -> Vec<String> {
        let crd = crds.iter().find(|c| c.spec.names.kind == kind).unwrap();
        crd.spec.versions[0]
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.clone())
            .collect()
    };
    assert_eq!(
        columns("Device"),
        ["MCU", "Phase", "Gateway", "Last Seen", "Apps"]
    );
    assert_eq!(
        columns("Application"),
        ["Phase", "Version", "Running", "Target", "Rollout", "Wave"]
    );
    assert_eq!(columns("Gateway"), ["Endpoint", "Phase", "Devices"]);
    // camelCase fields.
    assert!(
        yaml.contains("publicKey:")
            && yaml.contains("moduleSha256:")
            && !yaml.contains("public_key")
    );
}
