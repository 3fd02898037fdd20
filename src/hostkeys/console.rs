//! Where first-trust evidence comes from: the instance's console output (EC2 GetConsoleOutput). The parser of the
//! host key blocks cloud-init prints there is [`bastionctl_core::console`].

use std::sync::Arc;

use crate::ec2::{Ec2Api, Ec2Error};

pub use bastionctl_core::console::fingerprints;

/// Where an instance's console output comes from: EC2 GetConsoleOutput in the product ([`Ec2Api`]), a fake in
/// unit tests.
#[async_trait::async_trait]
pub trait ConsoleSource: Send + Sync + 'static {
    /// The console output of `instance_id`, `None` when there is none yet.
    async fn console_output(&self, instance_id: &str) -> Result<Option<String>, Ec2Error>;
}

#[async_trait::async_trait]
impl ConsoleSource for Arc<dyn Ec2Api> {
    async fn console_output(&self, instance_id: &str) -> Result<Option<String>, Ec2Error> {
        Ec2Api::console_output(self.as_ref(), instance_id).await
    }
}
