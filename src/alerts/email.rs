//! Alerts by email: the SMTP transport built from `[alerts.smtp]`, and the plain-text message
//! an alert becomes. Recipients are stored as the channel's `mailto:` URL.

use lettre::message::{header::ContentType, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{SmtpConfig, SmtpSecurity};

pub type Mailer = AsyncSmtpTransport<Tokio1Executor>;

/// Most recipients one email channel has.
pub const MAX_RECIPIENTS: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("the mail server settings are invalid")]
    Config(#[source] lettre::transport::smtp::Error),
    #[error("an address is invalid")]
    Address,
    #[error("the message could not be built")]
    Build(#[source] lettre::error::Error),
}

/// The transport for `[alerts.smtp]`, or `None` when no host is configured.
pub fn mailer(
    config: &SmtpConfig,
    timeout: std::time::Duration,
) -> Result<Option<Mailer>, MailError> {
    let Some(host) = config.host.as_deref().filter(|h| !h.is_empty()) else {
        return Ok(None);
    };
    let tls = match config.security {
        SmtpSecurity::None => Tls::None,
        SmtpSecurity::Starttls => {
            Tls::Required(TlsParameters::new(host.to_owned()).map_err(MailError::Config)?)
        }
        SmtpSecurity::Tls => {
            Tls::Wrapper(TlsParameters::new(host.to_owned()).map_err(MailError::Config)?)
        }
    };
    let port = config.port.unwrap_or(match config.security {
        SmtpSecurity::None => 25,
        SmtpSecurity::Starttls => 587,
        SmtpSecurity::Tls => 465,
    });
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(port)
        .tls(tls)
        .timeout(Some(timeout));
    if let (Some(user), Some(password)) = (&config.username, &config.password) {
        builder = builder.credentials(Credentials::new(user.clone(), password.0.clone()));
    }
    Ok(Some(builder.build()))
}

/// Parses the recipients the API was given; `None` if one is not an address.
pub fn parse_recipients(list: &[String]) -> Option<Vec<String>> {
    list.iter()
        .map(|a| {
            a.trim()
                .parse::<lettre::Address>()
                .ok()
                .map(|a| a.to_string())
        })
        .collect()
}

/// The recipients of a channel's `mailto:` URL.
pub fn recipients_of(url: &str) -> Vec<String> {
    url.strip_prefix("mailto:")
        .unwrap_or("")
        .split(',')
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A channel URL holding `recipients`.
pub fn mailto(recipients: &[String]) -> String {
    format!("mailto:{}", recipients.join(","))
}

/// Sends one plain-text message to every recipient of the channel.
pub async fn send(
    mailer: &Mailer,
    from: &str,
    to: &[String],
    subject: &str,
    body: String,
) -> Result<(), SendFailure> {
    let from: Mailbox = from
        .parse()
        .map_err(|_| SendFailure::Build(MailError::Address))?;
    let mut message = Message::builder().from(from).subject(subject);
    for r in to {
        let mailbox: Mailbox = r
            .parse()
            .map_err(|_| SendFailure::Build(MailError::Address))?;
        message = message.to(mailbox);
    }
    let message = message
        .header(ContentType::TEXT_PLAIN)
        .body(body)
        .map_err(|e| SendFailure::Build(MailError::Build(e)))?;
    mailer.send(message).await.map_err(SendFailure::Smtp)?;
    Ok(())
}

#[derive(Debug)]
pub enum SendFailure {
    Build(MailError),
    Smtp(lettre::transport::smtp::Error),
}

impl SendFailure {
    /// The server's reply code, if it answered with one, and a short reason without addresses.
    pub fn describe(&self) -> (Option<i64>, String) {
        match self {
            SendFailure::Build(e) => (None, e.to_string()),
            SendFailure::Smtp(e) => {
                let code = e.status().map(|c| i64::from(u16::from(c)));
                let reason = if e.is_timeout() {
                    "timed out".to_owned()
                } else if let Some(c) = code {
                    format!("the mail server answered {c}")
                } else if e.is_tls() {
                    "TLS with the mail server failed".to_owned()
                } else {
                    "could not reach the mail server".to_owned()
                };
                (code, reason)
            }
        }
    }
}
