//! The asset-transfer chaincode (the functions of Fabric's asset-transfer-basic) with ownership
//! taken from the signed creator; invariant: an asset changes or leaves the ledger only by its
//! owner or an admin, and only an admin may create an asset for someone else.

use chaincode_sdk::{Chaincode, ChaincodeError, Creator, ReadHint, Stub, async_trait};
use serde::{Deserialize, Serialize};

fn main() {
    chaincode_sdk::start(AssetTransfer)
}

/// The functions, with the arguments each expects.
const FUNCTIONS: &[(&str, &str)] = &[
    ("InitLedger", "no arguments"),
    ("CreateAsset", "id, color, size, owner, appraisedValue"),
    ("ReadAsset", "id"),
    ("UpdateAsset", "id, color, size, owner, appraisedValue"),
    ("DeleteAsset", "id"),
    ("AssetExists", "id"),
    ("TransferAsset", "id, newOwner"),
    ("GetAllAssets", "no arguments"),
];

/// An asset, stored as JSON under its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Asset {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Color")]
    pub color: String,
    #[serde(rename = "Size")]
    pub size: u64,
    #[serde(rename = "Owner")]
    pub owner: String,
    #[serde(rename = "AppraisedValue")]
    pub appraised_value: u64,
}

pub struct AssetTransfer;

#[async_trait]
impl Chaincode for AssetTransfer {
    /// Deploy: nothing to set up, unless the deploy calls `InitLedger` (admins deploy).
    async fn init(&self, stub: &mut dyn Stub) -> Result<Vec<u8>, ChaincodeError> {
        if stub.function() == "InitLedger" {
            return self.invoke(stub).await;
        }
        Ok(Vec::new())
    }

    async fn invoke(&self, stub: &mut dyn Stub) -> Result<Vec<u8>, ChaincodeError> {
        let function = stub.function().to_string();
        let args = stub.string_args()?;
        match function.as_str() {
            "InitLedger" => {
                expect_args(&function, &args)?;
                init_ledger(stub).await
            }
            "CreateAsset" => {
                expect_args(&function, &args)?;
                let asset = parse_asset(&function, &args)?;
                create_asset(stub, asset).await
            }
            "ReadAsset" => {
                expect_args(&function, &args)?;
                Ok(to_json(&read_asset(stub, &args[0]).await?))
            }
            "UpdateAsset" => {
                expect_args(&function, &args)?;
                let asset = parse_asset(&function, &args)?;
                update_asset(stub, asset).await
            }
            "DeleteAsset" => {
                expect_args(&function, &args)?;
                delete_asset(stub, &args[0]).await
            }
            "AssetExists" => {
                expect_args(&function, &args)?;
                let exists = stub.get_state(&args[0]).await?.is_some();
                Ok(exists.to_string().into_bytes())
            }
            "TransferAsset" => {
                expect_args(&function, &args)?;
                transfer_asset(stub, &args[0], &args[1]).await
            }
            "GetAllAssets" => {
                expect_args(&function, &args)?;
                get_all_assets(stub).await
            }
            other => {
                let known: Vec<&str> = FUNCTIONS.iter().map(|(name, _)| *name).collect();
                Err(ChaincodeError::UnknownFunction(format!(
                    "{other:?}; asset-transfer knows {}",
                    known.join(", ")
                )))
            }
        }
    }

    /// Every function that names an asset reads it first (CreateAsset to refuse an id that
    /// exists): the peer sends the asset with the batch, so a new id costs no round trip.
    fn read_hints(&self) -> Vec<ReadHint> {
        [
            "CreateAsset",
            "ReadAsset",
            "UpdateAsset",
            "DeleteAsset",
            "AssetExists",
            "TransferAsset",
        ]
        .into_iter()
        .map(|function| ReadHint::arg(function, 0))
        .collect()
    }
}

/// Checks the argument count against [`FUNCTIONS`].
fn expect_args(function: &str, args: &[String]) -> Result<(), ChaincodeError> {
    let usage = FUNCTIONS
        .iter()
        .find(|(name, _)| *name == function)
        .map(|(_, usage)| *usage)
        .expect("only functions listed in FUNCTIONS are dispatched");
    let expected = if usage == "no arguments" {
        0
    } else {
        usage.split(", ").count()
    };
    if args.len() == expected {
        Ok(())
    } else {
        Err(ChaincodeError::BadArguments(format!(
            "{function} expects {usage}, got {} argument{}",
            args.len(),
            if args.len() == 1 { "" } else { "s" }
        )))
    }
}

fn parse_number(function: &str, name: &str, value: &str) -> Result<u64, ChaincodeError> {
    value.parse().map_err(|_| {
        ChaincodeError::BadArguments(format!(
            "{function}: {name} must be a non-negative integer, got {value:?}"
        ))
    })
}

/// An asset from `id, color, size, owner, appraisedValue`.
fn parse_asset(function: &str, args: &[String]) -> Result<Asset, ChaincodeError> {
    if args[0].is_empty() {
        return Err(ChaincodeError::BadArguments(format!(
            "{function}: the asset id must not be empty"
        )));
    }
    if args[3].is_empty() {
        return Err(ChaincodeError::BadArguments(format!(
            "{function}: the owner must not be empty"
        )));
    }
    Ok(Asset {
        id: args[0].clone(),
        color: args[1].clone(),
        size: parse_number(function, "size", &args[2])?,
        owner: args[3].clone(),
        appraised_value: parse_number(function, "appraisedValue", &args[4])?,
    })
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("assets are plain data and always serialize")
}

async fn read_asset(stub: &mut dyn Stub, id: &str) -> Result<Asset, ChaincodeError> {
    let bytes = stub
        .get_state(id)
        .await?
        .ok_or_else(|| ChaincodeError::message(format!("the asset {id} does not exist")))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ChaincodeError::message(format!("the asset {id} is not valid JSON: {e}")))
}

fn put_asset(stub: &mut dyn Stub, asset: &Asset) -> Result<(), ChaincodeError> {
    stub.put_state(&asset.id, to_json(asset))
}

/// Refuses `action` on `asset` unless the creator owns it or is an admin.
fn require_owner(creator: &Creator, asset: &Asset, action: &str) -> Result<(), ChaincodeError> {
    if creator.is_admin() || creator.name == asset.owner {
        return Ok(());
    }
    Err(ChaincodeError::message(format!(
        "{} is not the owner of {} (owner: {}); only the owner or an admin may {action} it",
        creator.name, asset.id, asset.owner
    )))
}

async fn init_ledger(stub: &mut dyn Stub) -> Result<Vec<u8>, ChaincodeError> {
    if !stub.creator().is_admin() {
        return Err(ChaincodeError::message(format!(
            "{} may not run InitLedger: only an admin may",
            stub.creator().name
        )));
    }
    let assets = [
        ("asset1", "blue", 5, "Tomoko", 300),
        ("asset2", "red", 5, "Brad", 400),
        ("asset3", "green", 10, "Jin Soo", 500),
        ("asset4", "yellow", 10, "Max", 600),
        ("asset5", "black", 15, "Adriana", 700),
        ("asset6", "white", 15, "Michel", 800),
    ];
    for (id, color, size, owner, appraised_value) in assets {
        put_asset(
            stub,
            &Asset {
                id: id.to_string(),
                color: color.to_string(),
                size,
                owner: owner.to_string(),
                appraised_value,
            },
        )?;
    }
    Ok(Vec::new())
}

async fn create_asset(stub: &mut dyn Stub, asset: Asset) -> Result<Vec<u8>, ChaincodeError> {
    let creator = stub.creator();
    if !creator.is_admin() && creator.name != asset.owner {
        return Err(ChaincodeError::message(format!(
            "{} may not create {} for {}: a client may only create assets it owns",
            creator.name, asset.id, asset.owner
        )));
    }
    if stub.get_state(&asset.id).await?.is_some() {
        return Err(ChaincodeError::message(format!(
            "the asset {} already exists",
            asset.id
        )));
    }
    put_asset(stub, &asset)?;
    Ok(to_json(&asset))
}

async fn update_asset(stub: &mut dyn Stub, asset: Asset) -> Result<Vec<u8>, ChaincodeError> {
    let current = read_asset(stub, &asset.id).await?;
    require_owner(stub.creator(), &current, "update")?;
    put_asset(stub, &asset)?;
    Ok(to_json(&asset))
}

async fn delete_asset(stub: &mut dyn Stub, id: &str) -> Result<Vec<u8>, ChaincodeError> {
    let current = read_asset(stub, id).await?;
    require_owner(stub.creator(), &current, "delete")?;
    stub.delete_state(id)?;
    Ok(Vec::new())
}

async fn transfer_asset(
    stub: &mut dyn Stub,
    id: &str,
    new_owner: &str,
) -> Result<Vec<u8>, ChaincodeError> {
    if new_owner.is_empty() {
        return Err(ChaincodeError::BadArguments(
            "TransferAsset: the new owner must not be empty".to_string(),
        ));
    }
    let mut asset = read_asset(stub, id).await?;
    require_owner(stub.creator(), &asset, "transfer")?;
    let old_owner = std::mem::replace(&mut asset.owner, new_owner.to_string());
    put_asset(stub, &asset)?;
    Ok(old_owner.into_bytes())
}

async fn get_all_assets(stub: &mut dyn Stub) -> Result<Vec<u8>, ChaincodeError> {
    let assets = stub
        .get_state_range("", "")
        .await?
        .into_iter()
        .map(|(key, bytes)| {
            serde_json::from_slice::<Asset>(&bytes).map_err(|e| {
                ChaincodeError::message(format!("the asset {key} is not valid JSON: {e}"))
            })
        })
        .collect::<Result<Vec<Asset>, ChaincodeError>>()?;
    Ok(to_json(&assets))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chaincode_sdk::memory::NO_ARGS;
    use chaincode_sdk::{MemoryWorld, Role};

    fn admin() -> Creator {
        Creator::new("admin", "Org1", Role::Admin)
    }

    fn alice() -> Creator {
        Creator::new("alice", "Org1", Role::Client)
    }

    fn bob() -> Creator {
        Creator::new("bob", "Org2", Role::Client)
    }

    fn asset(id: &str, owner: &str) -> Asset {
        Asset {
            id: id.to_string(),
            color: "blue".to_string(),
            size: 5,
            owner: owner.to_string(),
            appraised_value: 300,
        }
    }

    fn stored(world: &MemoryWorld, id: &str) -> Option<Asset> {
        world
            .state(id)
            .map(|bytes| serde_json::from_slice(&bytes).expect("stored assets are JSON"))
    }

    async fn call(
        world: &mut MemoryWorld,
        creator: &Creator,
        function: &str,
        args: &[&str],
    ) -> Result<String, String> {
        world
            .invoke(&AssetTransfer, creator, function, args)
            .await
            .map(|payload| String::from_utf8(payload).expect("asset-transfer answers UTF-8"))
            .map_err(|e| e.to_string())
    }

    /// A world holding asset1 owned by alice.
    async fn world_with_alices_asset() -> MemoryWorld {
        let mut world = MemoryWorld::new();
        call(
            &mut world,
            &alice(),
            "CreateAsset",
            &["asset1", "blue", "5", "alice", "300"],
        )
        .await
        .expect("alice creates her own asset");
        world
    }

    #[test]
    fn asset_json_uses_fabric_field_names() {
        let json: serde_json::Value =
            serde_json::from_slice(&to_json(&asset("asset1", "alice"))).expect("JSON");
        assert_eq!(
            json,
            serde_json::json!({
                "ID": "asset1", "Color": "blue", "Size": 5, "Owner": "alice", "AppraisedValue": 300
            })
        );
    }

    #[tokio::test]
    async fn init_ledger_is_for_admins_only() {
        let mut world = MemoryWorld::new();
        let refused = call(&mut world, &alice(), "InitLedger", &[]).await;
        assert_eq!(
            refused,
            Err("alice may not run InitLedger: only an admin may".to_string())
        );
        assert!(world.states().is_empty());

        call(&mut world, &admin(), "InitLedger", &[])
            .await
            .expect("admin");
        assert_eq!(world.states().len(), 6);
        assert_eq!(
            stored(&world, "asset3"),
            Some(Asset {
                id: "asset3".to_string(),
                color: "green".to_string(),
                size: 10,
                owner: "Jin Soo".to_string(),
                appraised_value: 500,
            })
        );
    }

    #[tokio::test]
    async fn deploy_runs_init_ledger_only_when_asked() {
        let mut world = MemoryWorld::new();
        world
            .init(&AssetTransfer, &admin(), "", NO_ARGS)
            .await
            .expect("plain deploy");
        assert!(world.states().is_empty());
        world
            .init(&AssetTransfer, &admin(), "InitLedger", NO_ARGS)
            .await
            .expect("deploy with InitLedger");
        assert_eq!(world.states().len(), 6);
    }

    #[tokio::test]
    async fn a_client_creates_assets_only_for_itself() {
        let mut world = world_with_alices_asset().await;
        assert_eq!(stored(&world, "asset1"), Some(asset("asset1", "alice")));

        let refused = call(
            &mut world,
            &alice(),
            "CreateAsset",
            &["asset2", "red", "1", "bob", "10"],
        )
        .await;
        assert_eq!(
            refused,
            Err(
                "alice may not create asset2 for bob: a client may only create assets it owns"
                    .to_string()
            )
        );
        assert_eq!(world.state("asset2"), None);
    }

    #[tokio::test]
    async fn an_admin_creates_assets_for_anyone() {
        let mut world = MemoryWorld::new();
        let created = call(
            &mut world,
            &admin(),
            "CreateAsset",
            &["asset2", "red", "1", "bob", "10"],
        )
        .await;
        let created: Asset = serde_json::from_str(&created.expect("admin")).expect("JSON");
        assert_eq!(created.owner, "bob");
        assert_eq!(stored(&world, "asset2"), Some(created));
    }

    #[tokio::test]
    async fn an_existing_asset_cannot_be_created_again() {
        let mut world = world_with_alices_asset().await;
        let again = call(
            &mut world,
            &admin(),
            "CreateAsset",
            &["asset1", "red", "1", "bob", "1"],
        )
        .await;
        assert_eq!(again, Err("the asset asset1 already exists".to_string()));
        assert_eq!(stored(&world, "asset1"), Some(asset("asset1", "alice")));
    }

    #[tokio::test]
    async fn read_asset_and_asset_exists() {
        let mut world = world_with_alices_asset().await;
        let read = call(&mut world, &bob(), "ReadAsset", &["asset1"]).await;
        let read: Asset = serde_json::from_str(&read.expect("anyone may read")).expect("JSON");
        assert_eq!(read, asset("asset1", "alice"));
        assert_eq!(
            call(&mut world, &bob(), "ReadAsset", &["asset9"]).await,
            Err("the asset asset9 does not exist".to_string())
        );
        assert_eq!(
            call(&mut world, &bob(), "AssetExists", &["asset1"]).await,
            Ok("true".to_string())
        );
        assert_eq!(
            call(&mut world, &bob(), "AssetExists", &["asset9"]).await,
            Ok("false".to_string())
        );
    }

    #[tokio::test]
    async fn update_is_for_the_owner_or_an_admin() {
        let mut world = world_with_alices_asset().await;
        let refused = call(
            &mut world,
            &bob(),
            "UpdateAsset",
            &["asset1", "red", "9", "bob", "1"],
        )
        .await;
        assert_eq!(
            refused,
            Err(
                "bob is not the owner of asset1 (owner: alice); only the owner or an admin may \
                 update it"
                    .to_string()
            )
        );
        assert_eq!(stored(&world, "asset1"), Some(asset("asset1", "alice")));

        call(
            &mut world,
            &alice(),
            "UpdateAsset",
            &["asset1", "red", "9", "alice", "1"],
        )
        .await
        .expect("owner");
        assert_eq!(
            stored(&world, "asset1").map(|a| a.color),
            Some("red".to_string())
        );

        call(
            &mut world,
            &admin(),
            "UpdateAsset",
            &["asset1", "green", "9", "alice", "2"],
        )
        .await
        .expect("admin");
        assert_eq!(stored(&world, "asset1").map(|a| a.appraised_value), Some(2));

        assert_eq!(
            call(
                &mut world,
                &admin(),
                "UpdateAsset",
                &["asset9", "red", "1", "bob", "1"]
            )
            .await,
            Err("the asset asset9 does not exist".to_string())
        );
    }

    #[tokio::test]
    async fn delete_is_for_the_owner_or_an_admin() {
        let mut world = world_with_alices_asset().await;
        let refused = call(&mut world, &bob(), "DeleteAsset", &["asset1"]).await;
        assert_eq!(
            refused,
            Err(
                "bob is not the owner of asset1 (owner: alice); only the owner or an admin may \
                 delete it"
                    .to_string()
            )
        );
        assert!(world.state("asset1").is_some());

        call(&mut world, &alice(), "DeleteAsset", &["asset1"])
            .await
            .expect("owner");
        assert_eq!(world.state("asset1"), None);

        let mut world = world_with_alices_asset().await;
        call(&mut world, &admin(), "DeleteAsset", &["asset1"])
            .await
            .expect("admin");
        assert_eq!(world.state("asset1"), None);
        assert_eq!(
            call(&mut world, &admin(), "DeleteAsset", &["asset1"]).await,
            Err("the asset asset1 does not exist".to_string())
        );
    }

    #[tokio::test]
    async fn transfer_is_for_the_owner_or_an_admin_and_returns_the_old_owner() {
        let mut world = world_with_alices_asset().await;
        let refused = call(&mut world, &bob(), "TransferAsset", &["asset1", "bob"]).await;
        assert_eq!(
            refused,
            Err(
                "bob is not the owner of asset1 (owner: alice); only the owner or an admin may \
                 transfer it"
                    .to_string()
            )
        );
        assert_eq!(
            stored(&world, "asset1").map(|a| a.owner),
            Some("alice".to_string())
        );

        assert_eq!(
            call(&mut world, &alice(), "TransferAsset", &["asset1", "bob"]).await,
            Ok("alice".to_string())
        );
        assert_eq!(
            stored(&world, "asset1").map(|a| a.owner),
            Some("bob".to_string())
        );

        // The old owner has lost the asset; the new owner and an admin may move it.
        assert!(
            call(&mut world, &alice(), "TransferAsset", &["asset1", "alice"])
                .await
                .is_err()
        );
        assert_eq!(
            call(&mut world, &admin(), "TransferAsset", &["asset1", "carol"]).await,
            Ok("bob".to_string())
        );
        assert_eq!(
            stored(&world, "asset1").map(|a| a.owner),
            Some("carol".to_string())
        );
    }

    #[tokio::test]
    async fn get_all_assets_lists_every_asset_in_id_order() {
        let mut world = MemoryWorld::new();
        assert_eq!(
            call(&mut world, &bob(), "GetAllAssets", &[]).await,
            Ok("[]".to_string())
        );
        call(&mut world, &admin(), "InitLedger", &[])
            .await
            .expect("admin");
        call(&mut world, &admin(), "DeleteAsset", &["asset2"])
            .await
            .expect("admin");
        let all = call(&mut world, &bob(), "GetAllAssets", &[])
            .await
            .expect("anyone");
        let all: Vec<Asset> = serde_json::from_str(&all).expect("JSON array");
        let ids: Vec<&str> = all.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["asset1", "asset3", "asset4", "asset5", "asset6"]);
        assert_eq!(all[0].owner, "Tomoko");
    }

    #[tokio::test]
    async fn unknown_functions_and_bad_arguments_say_what_is_expected() {
        let mut world = world_with_alices_asset().await;
        let unknown = call(&mut world, &alice(), "BurnAsset", &["asset1"]).await;
        let unknown = unknown.expect_err("unknown");
        assert!(
            unknown.starts_with("unknown function \"BurnAsset\""),
            "{unknown}"
        );
        assert!(
            unknown.contains("TransferAsset") && unknown.contains("GetAllAssets"),
            "{unknown}"
        );

        assert_eq!(
            call(&mut world, &alice(), "TransferAsset", &["asset1"]).await,
            Err("bad arguments: TransferAsset expects id, newOwner, got 1 argument".to_string())
        );
        assert_eq!(
            call(
                &mut world,
                &alice(),
                "CreateAsset",
                &["a2", "red", "big", "alice", "1"]
            )
            .await,
            Err(
                "bad arguments: CreateAsset: size must be a non-negative integer, got \"big\""
                    .to_string()
            )
        );
        assert_eq!(
            call(&mut world, &alice(), "GetAllAssets", &["x"]).await,
            Err("bad arguments: GetAllAssets expects no arguments, got 1 argument".to_string())
        );
        let not_utf8 = world
            .invoke(&AssetTransfer, &alice(), "ReadAsset", &[vec![0xff_u8]])
            .await
            .expect_err("not UTF-8");
        assert!(
            matches!(not_utf8, ChaincodeError::BadArguments(_)),
            "{not_utf8}"
        );
    }

    #[tokio::test]
    async fn a_refused_call_changes_nothing() {
        let mut world = world_with_alices_asset().await;
        let before = world.states();
        for (function, args) in [
            ("TransferAsset", vec!["asset1", "bob"]),
            ("DeleteAsset", vec!["asset1"]),
            ("UpdateAsset", vec!["asset1", "red", "1", "bob", "1"]),
            ("CreateAsset", vec!["asset2", "red", "1", "alice", "1"]),
        ] {
            assert!(
                call(&mut world, &bob(), function, &args).await.is_err(),
                "{function}"
            );
        }
        assert_eq!(world.states(), before);
    }
}
