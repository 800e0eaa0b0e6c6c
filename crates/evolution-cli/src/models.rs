//! `evolution models`: the models the endpoint serves, one id per line (or
//! the full entries as JSON).

use clap::Args;

use crate::config::{ConnectionArgs, Endpoint};
use crate::emulator::EmbeddedArgs;
use crate::exit::CliError;
use crate::output::print_text;

/// `evolution models` options.
#[derive(Debug, Clone, Args)]
pub struct ModelsArgs {
    /// Print the entries (id, owner, creation time) as a JSON array.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// Runs `models`.
pub async fn run(args: ModelsArgs, embedded: &EmbeddedArgs) -> Result<(), CliError> {
    let endpoint = Endpoint::resolve(&args.connection, embedded).await?;
    let llm = endpoint.inference().build()?;
    let models = tokio::select! {
        models = llm.list_models() => models?,
        () = crate::signal::ctrl_c() => return Err(CliError::interrupted("interrupted")),
    };
    let text = if args.json {
        let mut json = serde_json::to_string_pretty(&models)
            .map_err(|e| CliError::failure(format!("cannot encode the model list: {e}")))?;
        json.push('\n');
        json
    } else {
        models.iter().map(|m| format!("{}\n", m.id)).collect()
    };
    print_text(&text)
}
