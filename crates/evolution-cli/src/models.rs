//! `evolution models`: the models the endpoint serves, one id per line, a
//! table with what the catalogue says about billing (`--long`), or the full
//! entries as JSON, every field the server sent included.

use clap::Args;
use evolution_langchain::ModelInfo;

use crate::config::{ConnectionArgs, Service};
use crate::emulator::EmbeddedArgs;
use crate::exit::CliError;
use crate::output::print_text;

/// `evolution models` options.
#[derive(Debug, Clone, Args)]
pub struct ModelsArgs {
    /// Print the entries as a JSON array, with every field the server sent
    /// (id, owner, creation time, is_billable, cost, …).
    #[arg(long, conflicts_with = "long")]
    pub json: bool,

    /// A table: id, whether the model is billed, its cost, its owner
    /// (`-` where the server says nothing).
    #[arg(short, long)]
    pub long: bool,
}

/// Runs `models`.
pub async fn run(
    args: ModelsArgs,
    connection: &ConnectionArgs,
    embedded: &EmbeddedArgs,
) -> Result<(), CliError> {
    let service = Service::resolve(connection, embedded).await?;
    let llm = service.inference().build()?;
    let models = tokio::select! {
        models = llm.list_models() => models?,
        () = crate::signal::ctrl_c() => return Err(CliError::interrupted("interrupted")),
    };
    let text = if args.json {
        let mut json = serde_json::to_string_pretty(&models)
            .map_err(|e| CliError::failure(format!("cannot encode the model list: {e}")))?;
        json.push('\n');
        json
    } else if args.long {
        table(&models)
    } else {
        models.iter().map(|m| format!("{}\n", m.id)).collect()
    };
    print_text(&text)
}

/// `ID  BILLABLE  COST  OWNER`, columns aligned.
fn table(models: &[ModelInfo]) -> String {
    let rows: Vec<[String; 4]> = models
        .iter()
        .map(|m| {
            [
                m.id.clone(),
                match m.is_billable() {
                    Some(true) => "yes".into(),
                    Some(false) => "no".into(),
                    None => "-".into(),
                },
                m.cost().map_or_else(|| "-".into(), |c| c.to_string()),
                m.owned_by.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let header = ["ID", "BILLABLE", "COST", "OWNER"].map(String::from);
    let mut widths = [0usize; 4];
    for row in std::iter::once(&header).chain(&rows) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect::<Vec<_>>()
            .join("  ");
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_billing_or_a_dash() {
        let models: Vec<ModelInfo> = serde_json::from_value(serde_json::json!([
            {"id": "a/free", "owned_by": "x", "is_billable": false, "cost": 0},
            {"id": "b/paid-model", "is_billable": true, "cost": 1.5},
            {"id": "c"}
        ]))
        .unwrap();
        assert_eq!(
            table(&models),
            "ID            BILLABLE  COST  OWNER\n\
             a/free        no        0     x\n\
             b/paid-model  yes       1.5   -\n\
             c             -         -     -\n"
        );
    }
}
