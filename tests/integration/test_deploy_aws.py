"""deploy/aws/signer-proxy.yaml deployed into the emulator's CloudFormation: the keys it creates
are keys the proxy loads and signs with, started from the stack's own outputs, and the
identity's policy names exactly those keys.

The KMS emulator is moto's whole server, CloudFormation and IAM included. One gap is filled
here (see `cloudformation_kms_keys`): moto's CloudFormation ignores a key's KeySpec, KeyUsage
and Origin. Everything else (intrinsics, conditions, outputs, IAM) is moto's own.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from eth_account import Account

from signer_proxy.dev.kms_emulator import KmsEmulator
from signer_proxy.eth.ecdsa import address_from_public_key, public_key_from_spki
from tests.conftest import REGION, Anvil, free_port, rpc_call, run_cli, start_proxy_process, stop
from tests.conftest import tool as foundry_tool

pytestmark = pytest.mark.integration

TEMPLATE = (
    Path(__file__).resolve().parents[2] / "deploy" / "aws" / "signer-proxy.yaml"
).read_text()
ISSUER_HOST = "oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"
SINK = "0x000000000000000000000000000000000000dEaD"


@pytest.fixture
def cloudformation_kms_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make moto's CloudFormation create the AWS::KMS::Key the template describes.

    moto (5.2) creates every CloudFormation key as SYMMETRIC_DEFAULT / ENCRYPT_DECRYPT whatever
    KeySpec, KeyUsage and Origin say, keeps KeyPolicy as an object (its own policy check then
    fails on it) and files Tags under the wrong names. This does what AWS does instead,
    including starting an EXTERNAL-origin key in PendingImport. In-process, like the DIGEST
    shim, and undone after the test.
    """
    from moto.kms.models import Key, kms_backends

    def create(
        cls: type[Key],
        /,
        resource_name: str,
        cloudformation_json: dict[str, Any],
        account_id: str,
        region_name: str,
        **kwargs: Any,
    ) -> Key:
        properties = cloudformation_json["Properties"]
        key = kms_backends[account_id][region_name].create_key(
            policy=json.dumps(properties["KeyPolicy"]),
            key_usage=properties.get("KeyUsage", "ENCRYPT_DECRYPT"),
            key_spec=properties.get("KeySpec", "SYMMETRIC_DEFAULT"),
            description=properties.get("Description", ""),
            tags=[{"TagKey": t["Key"], "TagValue": t["Value"]} for t in properties.get("Tags", [])],
            origin=properties.get("Origin", "AWS_KMS"),
        )
        if key.origin == "EXTERNAL":
            key.key_state, key.enabled = "PendingImport", False
        return key

    monkeypatch.setattr(Key, "create_from_cloudformation_json", classmethod(create))


def client(kms: KmsEmulator, service: str) -> Any:
    return boto3.client(service, region_name=REGION, endpoint_url=kms.url)


def deploy(kms: KmsEmulator, **parameters: str) -> dict[str, str]:
    """Create a stack from the template with these parameters; its outputs."""
    cloudformation = client(kms, "cloudformation")
    name = f"signer-proxy-{uuid.uuid4().hex[:8]}"
    cloudformation.create_stack(
        StackName=name,
        TemplateBody=TEMPLATE,
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Capabilities=["CAPABILITY_IAM"],
    )
    (stack,) = cloudformation.describe_stacks(StackName=name)["Stacks"]
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def address_of(kms: KmsEmulator, key_arn: str) -> str:
    der = client(kms, "kms").get_public_key(KeyId=key_arn)["PublicKey"]
    return address_from_public_key(public_key_from_spki(der))


def policy_document(kms: KmsEmulator, policy_arn: str) -> dict[str, Any]:
    iam = client(kms, "iam")
    version = iam.get_policy(PolicyArn=policy_arn)["Policy"]["DefaultVersionId"]
    document = iam.get_policy_version(PolicyArn=policy_arn, VersionId=version)["PolicyVersion"][
        "Document"
    ]
    return document if isinstance(document, dict) else json.loads(document)


@pytest.fixture
def eks_stack(kms: KmsEmulator, cloudformation_kms_keys: None) -> Iterator[dict[str, str]]:
    """A stack as docs/aws.md deploys it for EKS, with two keys and unique aliases."""
    yield deploy(
        kms,
        KeyCount="2",
        AliasPrefix=f"sp-{uuid.uuid4().hex[:8]}",
        EksOidcIssuer=f"https://{ISSUER_HOST}",
    )


def test_stack_keys_sign_through_a_proxy_started_from_the_stacks_outputs(
    anvil: Anvil, kms: KmsEmulator, eks_stack: dict[str, str]
) -> None:
    arns = eks_stack["KeyArns"].split(",")
    addresses = [address_of(kms, arn) for arn in arns]
    anvil.fund(addresses[1])

    proxy = start_proxy_process(
        *shlex.split(eks_stack["ServeArgs"]),
        "--upstream", anvil.url, "--aws-endpoint-url", kms.url,
    )  # fmt: skip
    try:
        assert rpc_call(proxy.url, "eth_accounts")["result"] == addresses
        sent = subprocess.run(
            [foundry_tool("cast"), "send", "--unlocked", "--from", addresses[1],
             "--rpc-url", proxy.url, SINK, "--value", "1", "--json"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        stop(proxy.process)
    assert sent.returncode == 0, sent.stderr
    tx_hash = json.loads(sent.stdout)["transactionHash"]
    assert anvil.call("eth_getTransactionReceipt", [tx_hash])["status"] == "0x1"
    raw = anvil.call("eth_getRawTransactionByHash", [tx_hash])
    assert Account.recover_transaction(raw) == addresses[1]


def test_helm_values_output_names_the_role_region_and_key_aliases(
    eks_stack: dict[str, str],
) -> None:
    values = yaml.safe_load(eks_stack["HelmValues"])

    assert values == {
        "serviceAccount": {
            "create": True,
            "name": "signer-proxy",
            "annotations": {"eks.amazonaws.com/role-arn": eks_stack["RoleArn"]},
        },
        "config": {"aws_region": REGION, "kms_keys": eks_stack["KeyAliases"].split(",")},
    }
    assert [a.rsplit("/", 1)[1] for a in values["config"]["kms_keys"]] == ["key-1", "key-2"]


def test_eks_role_trusts_the_clusters_service_account(
    kms: KmsEmulator, eks_stack: dict[str, str]
) -> None:
    role_name = eks_stack["RoleArn"].rsplit("/", 1)[1]
    trust = client(kms, "iam").get_role(RoleName=role_name)["Role"]["AssumeRolePolicyDocument"]
    trust = trust if isinstance(trust, dict) else json.loads(trust)

    (statement,) = trust["Statement"]
    assert statement["Principal"] == {
        "Federated": f"arn:aws:iam::123456789012:oidc-provider/{ISSUER_HOST}"
    }
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement["Condition"] == {
        "StringEquals": {
            f"{ISSUER_HOST}:sub": "system:serviceaccount:signer-proxy:signer-proxy",
            f"{ISSUER_HOST}:aud": "sts.amazonaws.com",
        }
    }


@pytest.mark.parametrize(
    ("identity", "outputs"),
    [
        pytest.param("eks-irsa", {"RoleArn", "HelmValues"}, id="eks-irsa"),
        pytest.param("ec2-instance-profile", {"RoleArn", "InstanceProfileName"}, id="ec2"),
        pytest.param("iam-user", {"UserName"}, id="iam-user"),
    ],
)
def test_identity_policy_names_exactly_the_stacks_keys(
    kms: KmsEmulator, cloudformation_kms_keys: None, identity: str, outputs: set[str]
) -> None:
    stack = deploy(
        kms,
        KeyCount="3",
        CreateImportedKey="true",
        ProxyIdentity=identity,
        AliasPrefix=f"sp-{uuid.uuid4().hex[:8]}",
        EnvironmentTag="staging",
        EksOidcIssuer=f"https://{ISSUER_HOST}" if identity == "eks-irsa" else "",
    )
    keys = [*stack["KeyArns"].split(","), stack["ImportedKeyArn"]]
    iam, kms_client = client(kms, "iam"), client(kms, "kms")
    identity_only = {"RoleArn", "HelmValues", "InstanceProfileName", "UserName"}

    assert set(stack) & identity_only == outputs
    assert len(set(keys)) == 4
    statements = {s["Sid"]: s for s in policy_document(kms, stack["PolicyArn"])["Statement"]}
    assert set(statements) == {"SignDigestsWithTheseKeysOnly", "ReadTheseKeys"}
    for statement in statements.values():
        assert statement["Resource"] == keys
    discovery = policy_document(kms, stack["DiscoveryPolicyArn"])["Statement"]
    assert [s["Resource"] for s in discovery] == ["*", keys]

    entities = iam.list_entities_for_policy(PolicyArn=stack["PolicyArn"])
    if identity == "iam-user":
        identity_arn = iam.get_user(UserName=stack["UserName"])["User"]["Arn"]
        assert [u["UserName"] for u in entities["PolicyUsers"]] == [stack["UserName"]]
        assert entities["PolicyRoles"] == []
        assert iam.list_access_keys(UserName=stack["UserName"])["AccessKeyMetadata"] == []
    else:
        identity_arn = stack["RoleArn"]
        assert [r["RoleName"] for r in entities["PolicyRoles"]] == [identity_arn.split("/")[-1]]
        assert entities["PolicyUsers"] == []

    for arn in keys:
        tags = kms_client.list_resource_tags(KeyId=arn)["Tags"]
        assert tags == [
            {"TagKey": "app", "TagValue": "signer-proxy"},
            {"TagKey": "env", "TagValue": "staging"},
        ]
        key_policy = json.loads(
            kms_client.get_key_policy(KeyId=arn, PolicyName="default")["Policy"]
        )
        signing = [s for s in key_policy["Statement"] if "kms:Sign" in str(s["Action"])]
        assert [s["Condition"]["ArnEquals"] for s in signing] == [
            {"aws:PrincipalArn": identity_arn}
        ]


def test_imported_key_waits_for_its_key_material(
    kms: KmsEmulator, cloudformation_kms_keys: None
) -> None:
    stack = deploy(
        kms,
        CreateImportedKey="true",
        ProxyIdentity="iam-user",
        AliasPrefix=f"sp-{uuid.uuid4().hex[:8]}",
    )
    metadata = client(kms, "kms").describe_key(KeyId=stack["ImportedKeyAlias"])["KeyMetadata"]

    assert (metadata["Origin"], metadata["KeySpec"], metadata["KeyUsage"]) == (
        "EXTERNAL",
        "ECC_SECG_P256K1",
        "SIGN_VERIFY",
    )
    assert metadata["Arn"] == stack["ImportedKeyArn"]
    refused = run_cli(
        "serve", "--listen", "127.0.0.1:0", "--upstream", f"http://127.0.0.1:{free_port()}",
        "--aws-region", REGION, "--aws-endpoint-url", kms.url,
        "--kms-key", stack["ImportedKeyAlias"],
    )  # fmt: skip
    assert refused.returncode == 2
    assert "KeyState is PendingImport: import its key material" in refused.stderr
