//! What the admin asked for, from the SSH user name and the channel request.
//!
//! User name `alice` names the admin; `alice:pacs01` or `alice:beheer@pacs01` also fixes the target
//! (needed by sftp and scp, which cannot pass a target in a command). scp and sftp split
//! `user@host:path` at the first colon, so on their command lines `alice+pacs01@bastion` is the
//! same login. With plain `alice`, the first word of the command names the target and the rest is
//! run there.

use crate::policy::TargetSpec;
use crate::proxy::Run;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Login {
    pub admin: String,
    pub fixed: Option<TargetSpec>,
}

impl Login {
    pub fn parse(user: &str) -> Option<Self> {
        match user.split_once([':', '+']) {
            Some((admin, spec)) => Some(Self {
                admin: admin.to_owned(),
                fixed: Some(TargetSpec::parse(spec)?),
            }),
            None => Some(Self {
                admin: user.to_owned(),
                fixed: None,
            }),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Show what the admin may reach now.
    List,
    Open {
        spec: TargetSpec,
        run: Run,
    },
    Refuse(String),
}

/// Decides what a shell, exec or subsystem request means for this login.
pub fn action(login: &Login, request: Run) -> Action {
    if let Some(spec) = &login.fixed {
        return Action::Open {
            spec: spec.clone(),
            run: request,
        };
    }
    match request {
        Run::Shell => Action::List,
        Run::Subsystem(name) => Action::Refuse(format!(
            "subsystem {name} needs the target in the user name, e.g. sftp {}+TARGET@bastion",
            login.admin
        )),
        Run::Exec(cmd) => {
            let text = String::from_utf8_lossy(&cmd);
            let text = text.trim_start();
            let (first, rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
            match TargetSpec::parse(first) {
                None => Action::Refuse(format!("unknown target {first:?}")),
                Some(spec) => {
                    let rest = rest.trim_start();
                    let run = if rest.is_empty() {
                        Run::Shell
                    } else {
                        Run::Exec(rest.as_bytes().to_vec())
                    };
                    Action::Open { spec, run }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(t: &str, a: Option<&str>) -> TargetSpec {
        TargetSpec {
            target: t.into(),
            account: a.map(Into::into),
        }
    }

    #[test]
    fn plain_login() {
        let l = Login::parse("alice").unwrap();
        assert_eq!(action(&l, Run::Shell), Action::List);
        assert_eq!(
            action(&l, Run::Exec(b"pacs01".to_vec())),
            Action::Open {
                spec: spec("pacs01", None),
                run: Run::Shell
            }
        );
        assert_eq!(
            action(&l, Run::Exec(b"beheer@pacs01 uptime -p".to_vec())),
            Action::Open {
                spec: spec("pacs01", Some("beheer")),
                run: Run::Exec(b"uptime -p".to_vec())
            }
        );
        assert!(matches!(
            action(&l, Run::Subsystem("sftp".into())),
            Action::Refuse(_)
        ));
        assert!(matches!(
            action(&l, Run::Exec(b"../x y".to_vec())),
            Action::Refuse(_)
        ));
    }

    #[test]
    fn fixed_target() {
        let l = Login::parse("alice:beheer@pacs01").unwrap();
        assert_eq!(l.admin, "alice");
        assert_eq!(
            action(&l, Run::Subsystem("sftp".into())),
            Action::Open {
                spec: spec("pacs01", Some("beheer")),
                run: Run::Subsystem("sftp".into())
            }
        );
        assert!(Login::parse("alice:").is_none());
        assert_eq!(Login::parse("alice+beheer@pacs01"), Some(l));
    }
}
