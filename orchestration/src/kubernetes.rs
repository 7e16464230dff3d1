//! Kubernetes locations, rendered as typed manifests (k8s-openapi) and applied with kube when
//! a cluster answers. Per location, in its namespace: a headless Service whose DNS names the
//! genesis lists (`POD.SERVICE.NAMESPACE.svc`), a StatefulSet whose pod N runs the plan's node
//! N (validators first) with a volume claim for its ledger, a ConfigMap with the genesis and a
//! configuration per pod, and a Secret with each pod's certificate and key. Every object is
//! labelled `weft.blueprint` and `weft.location`.
//!
//! The pods of a StatefulSet share one template, so each finds its own configuration by name:
//! Kubernetes expands `$(POD_NAME)` in the container's arguments. The Secret holds the keys
//! of all the location's pods and each pod mounts only its own two files from it (a reader of
//! the Secret itself sees them all: RBAC on the namespace guards it).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, KeyToPath, Namespace, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, Secret,
    SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::identities::NetworkDir;
use crate::image::PEER_UID;
use crate::plan::{
    CONTAINER_CONSENSUS, CONTAINER_DATA_DIR, CONTAINER_GRPC, CONTAINER_OPERATIONS, LABEL_BLUEPRINT,
    LocationPlan,
};

/// Where the pod finds its configuration and its identity.
pub const CONFIG_DIR: &str = "/etc/weft/config";
pub const IDENTITY_DIR: &str = "/etc/weft/identity";
/// What each pod's ledger claims.
pub const LEDGER_STORAGE: &str = "10Gi";

#[derive(Debug, thiserror::Error)]
pub enum KubernetesError {
    #[error("{0}")]
    Render(String),
    #[error("no Kubernetes cluster answers ({0})")]
    NoCluster(String),
    #[error("applying {object}: {reason}")]
    Apply { object: String, reason: String },
}

/// The objects of one kubernetes location.
#[derive(Debug, Clone, PartialEq)]
pub struct LocationManifests {
    pub namespace: Namespace,
    pub service: Service,
    pub config: ConfigMap,
    pub identities: Secret,
    pub stateful_set: StatefulSet,
}

fn meta(name: &str, namespace: Option<&str>, labels: &BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(str::to_string),
        labels: Some(labels.clone()),
        ..Default::default()
    }
}

/// Pod N of a location's StatefulSet.
pub fn pod_name(location: &LocationPlan, index: usize) -> String {
    format!(
        "{}-{index}",
        location.stateful_set.as_deref().unwrap_or_default()
    )
}

/// The manifests of `location` (a kubernetes location of `plan`), its pods running `image`.
pub fn render(
    location: &LocationPlan,
    network: &NetworkDir,
    image: &str,
) -> Result<LocationManifests, KubernetesError> {
    let (Some(namespace), Some(set)) = (&location.namespace, &location.stateful_set) else {
        return Err(KubernetesError::Render(format!(
            "location {} is not a kubernetes location",
            location.name
        )));
    };
    let ns = Some(namespace.as_str());
    let labels = &location.labels;
    let read = |path: std::path::PathBuf| {
        std::fs::read_to_string(&path)
            .map_err(|e| KubernetesError::Render(format!("{}: {e}", path.display())))
    };
    let mut config = BTreeMap::from([("genesis.json".to_string(), read(network.genesis_path())?)]);
    let mut keys = BTreeMap::new();
    for (index, node) in location.nodes.iter().enumerate() {
        let pod = pod_name(location, index);
        config.insert(
            format!("{pod}.toml"),
            crate::plan::node_config(
                &node.name,
                CONTAINER_DATA_DIR,
                &format!("{CONFIG_DIR}/genesis.json"),
                IDENTITY_DIR,
                None,
            ),
        );
        let identity = network.identity(&node.name, node.role);
        keys.insert(format!("{pod}.cert.pem"), read(identity.join("cert.pem"))?);
        keys.insert(format!("{pod}.key.pem"), read(identity.join("key.pem"))?);
    }
    let service = Service {
        metadata: meta(set, ns, labels),
        spec: Some(ServiceSpec {
            // Headless: each pod has its own DNS name, which genesis lists.
            cluster_ip: Some("None".into()),
            // Validators must reach each other before they are ready.
            publish_not_ready_addresses: Some(true),
            selector: Some(labels.clone()),
            ports: Some(
                [
                    ("grpc", CONTAINER_GRPC),
                    ("consensus", CONTAINER_CONSENSUS),
                    ("operations", CONTAINER_OPERATIONS),
                ]
                .into_iter()
                .map(|(name, port)| ServicePort {
                    name: Some(name.into()),
                    port: i32::from(port),
                    target_port: Some(IntOrString::Int(i32::from(port))),
                    ..Default::default()
                })
                .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    };
    let config_map = ConfigMap {
        metadata: meta(&format!("{set}-config"), ns, labels),
        data: Some(config),
        ..Default::default()
    };
    let secret = Secret {
        metadata: meta(&format!("{set}-identities"), ns, labels),
        type_: Some("Opaque".into()),
        string_data: Some(keys),
        ..Default::default()
    };
    let probe = |path: &str| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(i32::from(CONTAINER_OPERATIONS)),
            ..Default::default()
        }),
        period_seconds: Some(5),
        failure_threshold: Some(6),
        ..Default::default()
    };
    let mut env = vec![EnvVar {
        name: "POD_NAME".into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "metadata.name".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }];
    if let Some(first) = location.nodes.first() {
        env.extend(first.environment.iter().map(|(k, v)| EnvVar {
            name: k.clone(),
            value: Some(v.clone()),
            ..Default::default()
        }));
    }
    let container = Container {
        name: "weft".into(),
        image: Some(image.to_string()),
        args: Some(vec![
            "node".into(),
            "start".into(),
            "--config".into(),
            format!("{CONFIG_DIR}/$(POD_NAME).toml"),
        ]),
        env: Some(env),
        ports: Some(
            [
                ("grpc", CONTAINER_GRPC),
                ("consensus", CONTAINER_CONSENSUS),
                ("operations", CONTAINER_OPERATIONS),
            ]
            .into_iter()
            .map(|(name, port)| ContainerPort {
                name: Some(name.into()),
                container_port: i32::from(port),
                ..Default::default()
            })
            .collect(),
        ),
        readiness_probe: Some(probe("/readyz")),
        liveness_probe: Some(probe("/healthz")),
        security_context: Some(SecurityContext {
            run_as_user: Some(PEER_UID as i64),
            run_as_group: Some(PEER_UID as i64),
            run_as_non_root: Some(true),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "config".into(),
                mount_path: CONFIG_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            },
            VolumeMount {
                name: "identity".into(),
                mount_path: IDENTITY_DIR.into(),
                read_only: Some(true),
                // Each pod sees its own certificate and key only.
                sub_path_expr: Some("$(POD_NAME)".into()),
                ..Default::default()
            },
            VolumeMount {
                name: "data".into(),
                mount_path: CONTAINER_DATA_DIR.into(),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    let identity_items = (0..location.nodes.len())
        .flat_map(|index| {
            let pod = pod_name(location, index);
            ["cert.pem", "key.pem"].map(|file| KeyToPath {
                key: format!("{pod}.{file}"),
                path: format!("{pod}/{file}"),
                ..Default::default()
            })
        })
        .collect();
    let stateful_set = StatefulSet {
        metadata: meta(set, ns, labels),
        spec: Some(StatefulSetSpec {
            replicas: Some(location.nodes.len() as i32),
            service_name: Some(set.clone()),
            // Validators start together: each waits for the others anyway.
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels.clone()),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    security_context: Some(PodSecurityContext {
                        fs_group: Some(PEER_UID as i64),
                        ..Default::default()
                    }),
                    automount_service_account_token: Some(false),
                    volumes: Some(vec![
                        Volume {
                            name: "config".into(),
                            config_map: Some(ConfigMapVolumeSource {
                                name: format!("{set}-config"),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                        Volume {
                            name: "identity".into(),
                            secret: Some(SecretVolumeSource {
                                secret_name: Some(format!("{set}-identities")),
                                default_mode: Some(0o440),
                                items: Some(identity_items),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                    ]),
                    ..Default::default()
                }),
            },
            volume_claim_templates: Some(vec![PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some("data".into()),
                    labels: Some(labels.clone()),
                    ..Default::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(vec!["ReadWriteOnce".into()]),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some(BTreeMap::from([(
                            "storage".to_string(),
                            Quantity(LEDGER_STORAGE.into()),
                        )])),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok(LocationManifests {
        namespace: Namespace {
            metadata: meta(namespace, None, labels),
            ..Default::default()
        },
        service,
        config: config_map,
        identities: secret,
        stateful_set,
    })
}

/// Connects to the cluster the environment names (KUBECONFIG, or the pod's service
/// account), if one answers.
async fn client() -> Result<kube::Client, KubernetesError> {
    let client = kube::Client::try_default()
        .await
        .map_err(|e| KubernetesError::NoCluster(e.to_string()))?;
    match tokio::time::timeout(Duration::from_secs(5), client.apiserver_version()).await {
        Ok(Ok(_)) => Ok(client),
        Ok(Err(e)) => Err(KubernetesError::NoCluster(e.to_string())),
        Err(_) => Err(KubernetesError::NoCluster("no answer within 5 s".into())),
    }
}

/// Deletes every object labelled with `blueprint` in `namespace` (ledger claims included).
pub async fn delete(namespace: &str, blueprint: &str) -> Result<(), KubernetesError> {
    use kube::Api;
    use kube::api::{DeleteParams, ListParams};
    let client = client().await?;
    let list = ListParams::default().labels(&format!("{LABEL_BLUEPRINT}={blueprint}"));
    let params = DeleteParams::default();
    let failed = |object: &str| {
        let object = object.to_string();
        move |e: kube::Error| KubernetesError::Apply {
            object: format!("deleting {object}"),
            reason: e.to_string(),
        }
    };
    Api::<StatefulSet>::namespaced(client.clone(), namespace)
        .delete_collection(&params, &list)
        .await
        .map_err(failed("stateful sets"))?;
    for service in Api::<Service>::namespaced(client.clone(), namespace)
        .list(&list)
        .await
        .map_err(failed("services"))?
    {
        let name = service.metadata.name.unwrap_or_default();
        Api::<Service>::namespaced(client.clone(), namespace)
            .delete(&name, &params)
            .await
            .map_err(failed("a service"))?;
    }
    Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .delete_collection(&params, &list)
        .await
        .map_err(failed("config maps"))?;
    Api::<Secret>::namespaced(client.clone(), namespace)
        .delete_collection(&params, &list)
        .await
        .map_err(failed("secrets"))?;
    Api::<PersistentVolumeClaim>::namespaced(client, namespace)
        .delete_collection(&params, &list)
        .await
        .map_err(failed("volume claims"))?;
    Ok(())
}

impl LocationManifests {
    /// The manifests as one YAML stream, in the order `kubectl apply -f` needs them.
    pub fn to_yaml(&self) -> Result<String, KubernetesError> {
        let documents = [
            serde_norway::to_string(&self.namespace),
            serde_norway::to_string(&self.service),
            serde_norway::to_string(&self.config),
            serde_norway::to_string(&self.identities),
            serde_norway::to_string(&self.stateful_set),
        ];
        let mut out = String::new();
        for document in documents {
            let text = document.map_err(|e| KubernetesError::Render(e.to_string()))?;
            out.push_str("---\n");
            out.push_str(&text);
        }
        Ok(out)
    }

    /// Applies the manifests (server-side apply, field manager `weft`) to the cluster the
    /// environment names (KUBECONFIG, or the pod's service account), if one answers.
    pub async fn apply(&self) -> Result<(), KubernetesError> {
        use kube::Api;
        let client = client().await?;
        let namespace = self.namespace.metadata.name.clone().unwrap_or_default();
        let ns = namespace.as_str();
        apply_object(Api::all(client.clone()), &self.namespace, "the namespace").await?;
        apply_object(
            Api::namespaced(client.clone(), ns),
            &self.service,
            "the service",
        )
        .await?;
        apply_object(
            Api::namespaced(client.clone(), ns),
            &self.config,
            "the config map",
        )
        .await?;
        apply_object(
            Api::namespaced(client.clone(), ns),
            &self.identities,
            "the secret",
        )
        .await?;
        apply_object(
            Api::namespaced(client, ns),
            &self.stateful_set,
            "the stateful set",
        )
        .await
    }
}

/// Server-side apply of one object, field manager `weft`.
async fn apply_object<K>(api: kube::Api<K>, object: &K, what: &str) -> Result<(), KubernetesError>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
{
    use kube::api::{Patch, PatchParams};
    let name = object.meta().name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply("weft").force(),
        &Patch::Apply(object),
    )
    .await
    .map(|_| ())
    .map_err(|e| KubernetesError::Apply {
        object: what.to_string(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::{Blueprint, plan};

    /// The YAML stream parsed back, document by document, into the typed API.
    fn parse(yaml: &str) -> (Namespace, Service, ConfigMap, Secret, StatefulSet) {
        use serde::Deserialize;
        let mut documents = serde_norway::Deserializer::from_str(yaml);
        let mut next = || documents.next().expect("another document");
        (
            Namespace::deserialize(next()).expect("a Namespace"),
            Service::deserialize(next()).expect("a Service"),
            ConfigMap::deserialize(next()).expect("a ConfigMap"),
            Secret::deserialize(next()).expect("a Secret"),
            StatefulSet::deserialize(next()).expect("a StatefulSet"),
        )
    }

    #[test]
    fn the_manifests_are_valid_typed_objects_that_fit_together() {
        let text = include_str!("../blueprints/kubernetes.yaml");
        let blueprint = Blueprint::parse(text, Path::new("/srv")).expect("blueprint");
        let plan = plan(&blueprint, 0);
        let tmp = tempfile::tempdir().expect("tempdir");
        let network = NetworkDir::new(tmp.path());
        let genesis = network.issue(&plan).expect("identities");
        let east = &plan.locations[0];
        let yaml = render(east, &network, "weft-peer:test")
            .expect("render")
            .to_yaml()
            .expect("yaml");
        let (namespace, service, config, secret, set) = parse(&yaml);

        // Every object carries the blueprint's and the location's labels.
        for meta in [
            &namespace.metadata,
            &service.metadata,
            &config.metadata,
            &secret.metadata,
            &set.metadata,
        ] {
            let labels = meta.labels.clone().unwrap_or_default();
            assert_eq!(
                labels.get(LABEL_BLUEPRINT).map(String::as_str),
                Some("k8s-network")
            );
            assert_eq!(
                labels.get("weft.location").map(String::as_str),
                Some("east")
            );
        }
        assert_eq!(namespace.metadata.name.as_deref(), Some("weft-east"));
        for meta in [
            &service.metadata,
            &config.metadata,
            &secret.metadata,
            &set.metadata,
        ] {
            assert_eq!(meta.namespace.as_deref(), Some("weft-east"));
        }

        // The headless service selects the pods and serves the consensus port genesis names.
        let service_spec = service.spec.expect("service spec");
        assert_eq!(service_spec.cluster_ip.as_deref(), Some("None"));
        let ports: Vec<i32> = service_spec
            .ports
            .unwrap_or_default()
            .iter()
            .map(|p| p.port)
            .collect();
        assert_eq!(ports, [7051, 7151, 9443]);
        let spec = set.spec.expect("stateful set spec");
        assert_eq!(spec.service_name, service.metadata.name);
        assert_eq!(spec.replicas, Some(3), "2 validators and a peer");
        let template_labels = spec.template.metadata.expect("pod metadata").labels;
        assert_eq!(spec.selector.match_labels, template_labels);
        assert_eq!(service_spec.selector, template_labels);
        let service_name = service.metadata.name.clone().expect("service name");
        for (index, validator) in genesis.validators[..2].iter().enumerate() {
            assert_eq!(
                validator.consensus_address,
                format!("k8s-network-east-{index}.{service_name}.weft-east.svc:7151")
            );
        }

        // The pod template: its own configuration by name, non-root, read-only, probes.
        let pod = spec.template.spec.expect("pod spec");
        let container = &pod.containers[0];
        assert_eq!(container.image.as_deref(), Some("weft-peer:test"));
        let args = container.args.clone().unwrap_or_default();
        assert_eq!(
            args.last().map(String::as_str),
            Some("/etc/weft/config/$(POD_NAME).toml")
        );
        let env = container.env.clone().unwrap_or_default();
        let pod_name = env.iter().find(|e| e.name == "POD_NAME").expect("POD_NAME");
        assert_eq!(
            pod_name
                .value_from
                .as_ref()
                .and_then(|v| v.field_ref.as_ref())
                .map(|f| f.field_path.as_str()),
            Some("metadata.name")
        );
        let security = container
            .security_context
            .clone()
            .expect("security context");
        assert_eq!(security.run_as_user, Some(65534));
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert!(container.readiness_probe.is_some() && container.liveness_probe.is_some());
        let claims = spec.volume_claim_templates.unwrap_or_default();
        assert_eq!(claims[0].metadata.name.as_deref(), Some("data"));
        assert_eq!(
            east.nodes[0].volumes,
            ["data-k8s-network-east-0"],
            "the plan's claim"
        );
        let mounts = container.volume_mounts.clone().unwrap_or_default();
        let volumes = pod.volumes.unwrap_or_default();
        for mount in &mounts {
            let known = volumes.iter().any(|v| v.name == mount.name)
                || claims
                    .iter()
                    .any(|c| c.metadata.name.as_deref() == Some(&mount.name));
            assert!(known, "mount {} has a volume", mount.name);
        }

        // The config map: genesis and a configuration per pod, naming the plan's node.
        let data = config.data.expect("config data");
        let parsed: weft_proto::Genesis =
            serde_json::from_str(&data["genesis.json"]).expect("genesis JSON");
        assert_eq!(parsed, genesis);
        for (index, node) in east.nodes.iter().enumerate() {
            let toml = &data[&format!("k8s-network-east-{index}.toml")];
            assert!(toml.contains(&format!("id = \"{}\"", node.name)), "{toml}");
        }

        // The secret: each pod's certificate and key, mounted under its own name.
        let keys = secret.string_data.expect("secret data");
        assert_eq!(keys.len(), 6);
        assert_eq!(
            keys["k8s-network-east-0.cert.pem"],
            genesis.validators[0].certificate
        );
        let identity = volumes
            .iter()
            .find(|v| v.name == "identity")
            .and_then(|v| v.secret.clone())
            .expect("the identity volume");
        assert_eq!(identity.secret_name, secret.metadata.name);
        let items = identity.items.unwrap_or_default();
        assert!(items.iter().any(
            |i| i.key == "k8s-network-east-2.key.pem" && i.path == "k8s-network-east-2/key.pem"
        ));
        let identity_mount = mounts
            .iter()
            .find(|m| m.name == "identity")
            .expect("mounted");
        assert_eq!(identity_mount.sub_path_expr.as_deref(), Some("$(POD_NAME)"));
    }
}
