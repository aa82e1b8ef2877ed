//! Who may use the API (app-scoped tokens) and what they changed (the audit
//! log): the records, shared by both backends.

use herald_domain::{AppId, AuditId, TokenId};

use crate::{PageRequest, Timestamp};

pub(crate) const TOKEN_COLUMNS: &str = "id, app_id, kind, name, created_at, expires_at, revoked_at";
pub(crate) const AUDIT_COLUMNS: &str = "id, actor, app_id, action, target, detail, created_at";

/// What a token was made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// Created by an operator for a program (`POST /api/v1/token/`,
    /// `herald token create`).
    Api,
    /// Handed out by the portal-access route; short-lived.
    Portal,
    /// Handed out by the portal-access route with `readOnly: true`: reads
    /// only, through the API and the portal.
    PortalReadOnly,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Portal => "portal",
            Self::PortalReadOnly => "portal_read_only",
        }
    }

    /// Whether the token may only read.
    pub fn read_only(self) -> bool {
        self == Self::PortalReadOnly
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "api" => Some(Self::Api),
            "portal" => Some(Self::Portal),
            "portal_read_only" => Some(Self::PortalReadOnly),
            _ => None,
        }
    }
}

/// A token as stored: never the token itself, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub id: TokenId,
    pub app_id: AppId,
    pub kind: TokenKind,
    pub name: String,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
}

impl Token {
    /// Whether the token opens the API at `now`.
    pub fn is_valid_at(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| at > now)
    }
}

#[derive(Clone)]
pub struct TokenInput {
    pub app_id: AppId,
    pub kind: TokenKind,
    pub name: String,
    /// SHA-256 of the token.
    pub hash: [u8; 32],
    pub expires_at: Option<Timestamp>,
}

impl std::fmt::Debug for TokenInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenInput")
            .field("app_id", &self.app_id)
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// How a token's hash is stored (lower-case hex).
pub(crate) fn hash_text(hash: &[u8; 32]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// One change: who (`admin` or a token id), to what, when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: AuditId,
    pub actor: String,
    /// The app the change belongs to; `None` for server-wide things
    /// (event types, apps' creation by the admin is under the app).
    pub app_id: Option<AppId>,
    /// `endpoint.created`, `endpoint.secret_rotated`, …
    pub action: String,
    /// The id (or name) of what changed.
    pub target: String,
    /// Extra facts as JSON; never secrets.
    pub detail: Option<String>,
    pub created_at: Timestamp,
}

/// Which audit entries to list, newest first.
#[derive(Debug, Clone)]
pub struct AuditQuery {
    /// Only this app's entries; `None`: all.
    pub app: Option<AppId>,
    pub page: PageRequest,
}

/// An app's test inspector: a receiving address (`/inspect/{token}`) that
/// keeps the last requests it gets, for trying endpoints before the
/// receiver exists. The token is in the address the app owner sees, so it
/// is kept as it is; it only lets one write into this inspector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspector {
    pub app_id: AppId,
    pub token: String,
    pub created_at: Timestamp,
}

/// One request an inspector received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InspectedRequest {
    pub id: String,
    pub app_id: AppId,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// In the order received, names lower-case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body was longer than what is kept.
    pub body_truncated: bool,
    pub received_at: Timestamp,
}

/// Requests kept per inspector.
pub const INSPECTED_KEPT: usize = 100;
