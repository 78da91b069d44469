//! `courier schedules`: the scheduled functions and their next fire times, as a table.

use anyhow::Result;
use clap::Args;
use courier_scheduler::ScheduleView;
use reqwest::Method;

use crate::client::{Gateway, GatewayArgs};

#[derive(Debug, Args)]
pub(crate) struct SchedulesArgs {
    /// Print the JSON of `GET /system/schedules` instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    gateway: GatewayArgs,
}

pub(crate) async fn run(args: SchedulesArgs) -> Result<()> {
    let gateway = Gateway::new(&args.gateway)?;
    let resp = gateway
        .expect_ok(
            gateway.request(Method::GET, "/system/schedules"),
            "listing schedules",
        )
        .await?;
    let views: Vec<ScheduleView> = resp.json().await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&views)?);
    } else {
        print!("{}", courier_scheduler::table(&views));
    }
    Ok(())
}
