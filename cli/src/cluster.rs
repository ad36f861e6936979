//! The stack on a Docker Swarm cluster: the nodes `[cluster]` lists, and how `cluster init`
//! forms (or adopts) the swarm from them, planned as typed steps from what each engine reports.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    net::IpAddr,
    path::PathBuf,
};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// `[cluster]`: the engines the stack runs on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    pub nodes: Vec<NodeConfig>,
}

/// One node: how to reach its engine and what it is for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// `unix:///path`, `tcp://host:port` (with `tls`) or `ssh://user@host`.
    pub engine: String,
    /// The address the other nodes reach it on (swarm's advertise address); by default the
    /// host of a `tcp://` or `ssh://` engine, or the one swarm picks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<NodeLabel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFiles>,
    /// The private key an `ssh://` engine is reached with (relative to the configuration's
    /// folder); by default ssh's own choice (~/.ssh/config, the agent, ~/.ssh/id_*).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_key: Option<PathBuf>,
}

/// What a node is for: the edge's published ports, or a database and its volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeLabel {
    Edge,
    AuthDb,
    PaymentsDb,
}

impl NodeLabel {
    pub const ALL: [Self; 3] = [Self::Edge, Self::AuthDb, Self::PaymentsDb];

    /// The swarm node label that says it (placement constraints use it).
    pub fn key(self) -> &'static str {
        match self {
            Self::Edge => "stackctl.edge",
            Self::AuthDb => "stackctl.auth-db",
            Self::PaymentsDb => "stackctl.payments-db",
        }
    }

    /// As stack.toml writes it.
    pub fn name(self) -> &'static str {
        &self.key()["stackctl.".len()..]
    }
}

/// The client certificate files of a `tcp://` engine, relative to the configuration's folder.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Where a node's engine listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineUrl {
    Unix(PathBuf),
    Tcp { host: String, port: u16 },
    Ssh { host: String },
}

impl EngineUrl {
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        if let Some(path) = url.strip_prefix("unix://") {
            if !path.starts_with('/') {
                bail!("{url}: a unix socket needs an absolute path (unix:///run/docker.sock)");
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        if let Some(rest) = url.strip_prefix("tcp://") {
            let rest = rest.trim_end_matches('/');
            let (host, port) = rest
                .rsplit_once(':')
                .with_context(|| format!("{url}: give the port (tcp://host:2376)"))?;
            let port = port
                .parse()
                .ok()
                .filter(|p| *p != 0)
                .with_context(|| format!("{url}: {port} is not a port"))?;
            if host.is_empty() {
                bail!("{url}: no host");
            }
            return Ok(Self::Tcp {
                host: host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned(),
                port,
            });
        }
        if let Some(rest) = url.strip_prefix("ssh://") {
            let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
            let host = host.split(':').next().unwrap_or_default();
            if host.is_empty() {
                bail!("{url}: no host (ssh://user@host)");
            }
            return Ok(Self::Ssh {
                host: host.to_owned(),
            });
        }
        bail!("{url}: use unix:///path, tcp://host:port or ssh://user@host")
    }

    /// The host's address when the URL names one.
    fn address(&self) -> Option<IpAddr> {
        match self {
            Self::Unix(_) => None,
            Self::Tcp { host, .. } | Self::Ssh { host } => host.parse().ok(),
        }
    }
}

impl NodeConfig {
    /// The address other nodes reach it on, when stack.toml gives or implies one.
    pub fn advertise(&self) -> Option<IpAddr> {
        self.address.or_else(|| {
            EngineUrl::parse(&self.engine)
                .ok()
                .and_then(|u| u.address())
        })
    }

    pub fn has(&self, label: NodeLabel) -> bool {
        self.labels.contains(&label)
    }
}

impl Cluster {
    /// Errors name the key (`cluster.nodes[1].engine`).
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.nodes.is_empty() {
            bail!("cluster.nodes: list at least one node");
        }
        for (i, node) in self.nodes.iter().enumerate() {
            let key = format!("cluster.nodes[{i}]");
            let url = EngineUrl::parse(&node.engine).with_context(|| format!("{key}.engine"))?;
            if let Some(j) = self.nodes[..i].iter().position(|n| n.engine == node.engine) {
                bail!("{key}.engine: {} is already node {}'s", node.engine, j + 1);
            }
            if node.tls.is_some() && !matches!(url, EngineUrl::Tcp { .. }) {
                bail!("{key}.tls: only a tcp:// engine takes TLS files");
            }
            if node.ssh_key.is_some() && !matches!(url, EngineUrl::Ssh { .. }) {
                bail!("{key}.ssh_key: only an ssh:// engine takes a key");
            }
            let mut labels = node.labels.clone();
            labels.sort();
            labels.dedup();
            if labels.len() != node.labels.len() {
                bail!("{key}.labels: a label is given twice");
            }
        }
        for label in NodeLabel::ALL {
            let count = self.nodes.iter().filter(|n| n.has(label)).count();
            match (label, count) {
                (NodeLabel::Edge, 0) => bail!(
                    "cluster.nodes: label at least one node \"edge\" (its ports 80 and 443 serve the stack)"
                ),
                (NodeLabel::AuthDb | NodeLabel::PaymentsDb, n) if n != 1 => bail!(
                    "cluster.nodes: label exactly one node \"{}\" (the database lives on its disk), not {n}",
                    label.name()
                ),
                _ => {}
            }
        }
        Ok(())
    }

    /// How many managers the swarm should have: three survive the loss of one; with fewer
    /// nodes one, since two managers lose their quorum when either is lost.
    pub fn managers(&self) -> usize {
        if self.nodes.len() >= 3 { 3 } else { 1 }
    }
}

/// What a node's engine says of its swarm membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Membership {
    /// In no swarm.
    Inactive,
    Member(Member),
    /// Joining, locked or in error: not something `init` can fix by itself.
    Stuck(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub node_id: String,
    /// The swarm's id, which only managers know.
    pub cluster_id: Option<String>,
    pub manager: bool,
    /// The node ids of the managers it knows of.
    pub managers: Vec<String>,
}

/// One step of forming the swarm. Nodes are indexes into `cluster.nodes`; users read them
/// counted from 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A new swarm, with this node its first manager.
    Init { node: usize },
    /// Join the swarm through a manager.
    Join { node: usize, manager: bool },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Init { node } => {
                write!(f, "node {}: start a new swarm, as its manager", node + 1)
            }
            Self::Join { node, manager } => write!(
                f,
                "node {}: join the swarm as a {}",
                node + 1,
                if *manager { "manager" } else { "worker" }
            ),
        }
    }
}

/// The steps that put every node in one swarm: the one some of them are in already (adopted), or
/// a new one on the first node. The first nodes to join are managers until the swarm has
/// `managers`. Refuses nodes in different swarms, or in a swarm whose managers are not listed.
pub fn plan(seen: &[Membership], managers: usize) -> anyhow::Result<Vec<Step>> {
    for (i, m) in seen.iter().enumerate() {
        if let Membership::Stuck(state) = m {
            bail!(
                "node {} is {state} in a swarm; fix or leave it (docker swarm leave) and run again",
                i + 1
            );
        }
    }
    let members: Vec<(usize, &Member)> = seen
        .iter()
        .enumerate()
        .filter_map(|(i, m)| match m {
            Membership::Member(member) => Some((i, member)),
            _ => None,
        })
        .collect();
    let swarms: BTreeMap<&str, Vec<usize>> =
        members.iter().fold(BTreeMap::new(), |mut swarms, (i, m)| {
            if let Some(id) = &m.cluster_id {
                swarms.entry(id.as_str()).or_default().push(i + 1);
            }
            swarms
        });
    if swarms.len() > 1 {
        let list: Vec<String> = swarms
            .iter()
            .map(|(id, nodes)| format!("swarm {} has nodes {nodes:?}", short(id)))
            .collect();
        bail!(
            "the nodes are in different swarms ({}); have the nodes of one leave it (docker swarm leave --force) and run again",
            list.join(", ")
        );
    }
    let manager_ids: Vec<&str> = members
        .iter()
        .filter(|(_, m)| m.manager)
        .map(|(_, m)| m.node_id.as_str())
        .collect();
    for (i, m) in &members {
        if !m.manager
            && !m
                .managers
                .iter()
                .any(|id| manager_ids.contains(&id.as_str()))
        {
            bail!(
                "node {n} is a worker of a swarm none of whose managers is listed in [cluster]; list one of them, or have node {n} leave its swarm (docker swarm leave)",
                n = i + 1
            );
        }
    }

    let mut steps = Vec::new();
    let mut count = manager_ids.len();
    if members.is_empty() {
        steps.push(Step::Init { node: 0 });
        count = 1;
    }
    for (i, m) in seen.iter().enumerate() {
        if *m == Membership::Inactive
            && !matches!(steps.first(), Some(Step::Init { node }) if *node == i)
        {
            let manager = count < managers;
            count += usize::from(manager);
            steps.push(Step::Join { node: i, manager });
        }
    }
    Ok(steps)
}

/// What the swarm should say of a node: stackctl's labels as configured (others kept) and the
/// manager role when it is to be one. `None` when it says so already.
pub fn node_spec(
    current: &bollard::models::NodeSpec,
    wanted: &[NodeLabel],
    promote: bool,
) -> Option<bollard::models::NodeSpec> {
    use bollard::models::NodeSpecRoleEnum;
    let mut labels: HashMap<String, String> = current
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| !NodeLabel::ALL.iter().any(|l| l.key() == k))
        .collect();
    for label in wanted {
        labels.insert(label.key().to_owned(), "true".to_owned());
    }
    let role = if promote {
        Some(NodeSpecRoleEnum::MANAGER)
    } else {
        current.role
    };
    let same = current.labels.clone().unwrap_or_default() == labels && current.role == role;
    (!same).then(|| bollard::models::NodeSpec {
        labels: Some(labels),
        role,
        ..current.clone()
    })
}

/// The first 12 characters of an id, as docker prints them.
pub fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use bollard::models::{NodeSpec, NodeSpecRoleEnum};

    use super::*;

    fn node(engine: &str, labels: &[NodeLabel]) -> NodeConfig {
        NodeConfig {
            engine: engine.to_owned(),
            address: None,
            labels: labels.to_vec(),
            tls: None,
            ssh_key: None,
        }
    }

    fn three() -> Cluster {
        Cluster {
            nodes: vec![
                node("unix:///run/n1.sock", &[NodeLabel::Edge, NodeLabel::AuthDb]),
                node("tcp://10.1.0.2:2376", &[NodeLabel::PaymentsDb]),
                node("ssh://ops@10.1.0.3", &[]),
            ],
        }
    }

    #[test]
    fn engine_urls_are_read_or_refused_with_the_form_to_use() {
        assert_eq!(
            EngineUrl::parse("unix:///run/stack/n1.sock").unwrap(),
            EngineUrl::Unix("/run/stack/n1.sock".into())
        );
        assert_eq!(
            EngineUrl::parse("tcp://node2.example:2376").unwrap(),
            EngineUrl::Tcp {
                host: "node2.example".into(),
                port: 2376
            }
        );
        assert_eq!(
            EngineUrl::parse("ssh://ops@10.1.0.3:22").unwrap(),
            EngineUrl::Ssh {
                host: "10.1.0.3".into()
            }
        );
        for (bad, says) in [
            ("unix://run/docker.sock", "absolute path"),
            ("tcp://node2", "give the port"),
            ("tcp://node2:http", "not a port"),
            ("ssh://", "no host"),
            ("http://node2:2375", "use unix:///path"),
        ] {
            let err = format!("{:#}", EngineUrl::parse(bad).unwrap_err());
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn the_advertised_address_comes_from_the_engine_unless_given() {
        let c = three();
        assert_eq!(c.nodes[0].advertise(), None);
        assert_eq!(c.nodes[1].advertise(), Some("10.1.0.2".parse().unwrap()));
        assert_eq!(c.nodes[2].advertise(), Some("10.1.0.3".parse().unwrap()));
        let mut given = c.nodes[1].clone();
        given.address = Some("192.168.5.2".parse().unwrap());
        assert_eq!(given.advertise(), Some("192.168.5.2".parse().unwrap()));
    }

    #[test]
    fn validation_names_the_node_and_the_rule() {
        assert!(three().validate().is_ok());
        type Change = fn(&mut Cluster);
        let cases: [(Change, &str); 7] = [
            (|c| c.nodes.clear(), "list at least one node"),
            (
                |c| c.nodes[2].engine = "unix:///run/n1.sock".into(),
                "cluster.nodes[2].engine: unix:///run/n1.sock is already node 1's",
            ),
            (
                |c| c.nodes[1].labels.push(NodeLabel::AuthDb),
                "exactly one node \"auth-db\"",
            ),
            (
                |c| c.nodes[1].labels.clear(),
                "exactly one node \"payments-db\"",
            ),
            (|c| c.nodes[0].labels = vec![NodeLabel::AuthDb], "\"edge\""),
            (
                |c| {
                    c.nodes[2].tls = Some(TlsFiles {
                        ca: "ca.pem".into(),
                        cert: "cert.pem".into(),
                        key: "key.pem".into(),
                    })
                },
                "cluster.nodes[2].tls: only a tcp:// engine",
            ),
            (
                |c| c.nodes[0].ssh_key = Some("id_ed25519".into()),
                "cluster.nodes[0].ssh_key: only an ssh:// engine",
            ),
        ];
        for (change, says) in cases {
            let mut c = three();
            change(&mut c);
            let err = format!("{:#}", c.validate().unwrap_err());
            assert!(err.contains(says), "{err}");
        }
    }

    fn member(id: &str, swarm: Option<&str>, managers: &[&str]) -> Membership {
        Membership::Member(Member {
            node_id: id.into(),
            cluster_id: swarm.map(Into::into),
            manager: swarm.is_some(),
            managers: managers.iter().map(|m| (*m).to_owned()).collect(),
        })
    }

    fn lines(steps: &[Step]) -> Vec<String> {
        steps.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_new_swarm_starts_on_the_first_node_with_three_managers() {
        let seen = vec![Membership::Inactive; 4];
        assert_eq!(
            lines(&plan(&seen, 3).unwrap()),
            [
                "node 1: start a new swarm, as its manager",
                "node 2: join the swarm as a manager",
                "node 3: join the swarm as a manager",
                "node 4: join the swarm as a worker",
            ]
        );
        assert_eq!(
            lines(&plan(&seen[..2], 1).unwrap()),
            [
                "node 1: start a new swarm, as its manager",
                "node 2: join the swarm as a worker",
            ]
        );
    }

    #[test]
    fn an_existing_swarm_is_adopted_and_a_formed_one_left_alone() {
        let seen = vec![
            Membership::Inactive,
            member("m1", Some("swarm-a"), &["m1"]),
            Membership::Inactive,
        ];
        assert_eq!(
            lines(&plan(&seen, 3).unwrap()),
            [
                "node 1: join the swarm as a manager",
                "node 3: join the swarm as a manager",
            ]
        );
        let formed = vec![
            member("m1", Some("swarm-a"), &["m1", "m2"]),
            member("m2", Some("swarm-a"), &["m1", "m2"]),
            member("w1", None, &["m1", "m2"]),
        ];
        assert!(plan(&formed, 3).unwrap().is_empty());
    }

    #[test]
    fn nodes_of_other_swarms_are_refused() {
        let two = vec![
            member("m1", Some("swarm-aaaaaaaaaaaa-1"), &["m1"]),
            member("m2", Some("swarm-bbbbbbbbbbbb-2"), &["m2"]),
        ];
        let err = plan(&two, 1).unwrap_err().to_string();
        assert!(err.contains("different swarms"), "{err}");
        assert!(err.contains("swarm swarm-aaaaaa has nodes [1]"), "{err}");
        let stray = vec![Membership::Inactive, member("w9", None, &["elsewhere"])];
        let err = plan(&stray, 1).unwrap_err().to_string();
        assert!(err.contains("node 2 is a worker of a swarm"), "{err}");
        let stuck = vec![Membership::Stuck("pending".into())];
        let err = plan(&stuck, 1).unwrap_err().to_string();
        assert!(err.contains("node 1 is pending"), "{err}");
    }

    #[test]
    fn node_labels_are_set_and_others_kept() {
        let current = NodeSpec {
            labels: Some(HashMap::from([
                ("zone".to_owned(), "b".to_owned()),
                ("stackctl.auth-db".to_owned(), "true".to_owned()),
            ])),
            role: Some(NodeSpecRoleEnum::WORKER),
            ..Default::default()
        };
        let spec = node_spec(&current, &[NodeLabel::Edge], true).unwrap();
        assert_eq!(
            spec.labels.unwrap(),
            HashMap::from([
                ("zone".to_owned(), "b".to_owned()),
                ("stackctl.edge".to_owned(), "true".to_owned()),
            ])
        );
        assert_eq!(spec.role, Some(NodeSpecRoleEnum::MANAGER));
        assert_eq!(node_spec(&current, &[NodeLabel::AuthDb], false), None);
    }
}
