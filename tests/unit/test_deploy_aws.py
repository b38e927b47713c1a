"""deploy/aws: the CloudFormation template grants the proxy's identity nothing but signing and
reading its own keys, keeps the keys when the stack goes, and stays what render.py writes.

The template is read as CloudFormation reads it (short-form intrinsics included) and evaluated
for a table of parameter sets: conditions decide which resources exist, Fn::If picks a branch,
AWS::NoValue drops out, Fn::Sub/Join/Split compute. Attributes stay symbolic
("GetAtt:Key1.Arn"), which is all a policy check needs: which keys a statement names, never
what their ARNs will be.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "aws" / "signer-proxy.yaml"
DOCS = ROOT / "docs" / "aws.md"

# The allow-list for the proxy's identity: sign and read its keys, plus the reads that
# key discovery (--kms-tag) needs. Written out here, not imported, so that the template cannot
# widen it by changing one constant.
ALLOWED_ACTIONS = {
    "kms:Sign",
    "kms:GetPublicKey",
    "kms:DescribeKey",
    "kms:ListKeys",
    "kms:ListAliases",
    "kms:ListResourceTags",
}
# The only actions IAM cannot narrow to a key: they may (must) have Resource "*".
UNSCOPABLE_ACTIONS = {"kms:ListKeys", "kms:ListAliases"}
# What a key administrator must never be able to do: use the key, or let someone else use it.
CRYPTO_ACTIONS = {
    "kms:Sign",
    "kms:Verify",
    "kms:Encrypt",
    "kms:Decrypt",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
    "kms:GenerateDataKey",
    "kms:GenerateDataKeyPair",
    "kms:GenerateMac",
    "kms:VerifyMac",
    "kms:DeriveSharedSecret",
    "kms:CreateGrant",
}
PROXY_KEY_ACTIONS = {"kms:Sign", "kms:GetPublicKey", "kms:DescribeKey", "kms:ListResourceTags"}
NO_VALUE = object()


# --- reading and evaluating the template ----------------------------------------------------


class CfnLoader(yaml.SafeLoader):
    """YAML as CloudFormation reads it: !Ref, !GetAtt, !Sub ... become their long forms."""


def _intrinsic(loader: CfnLoader, suffix: str, node: yaml.Node) -> Any:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "Condition":
        return {"Condition": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


CfnLoader.add_multi_constructor("!", _intrinsic)


def parse(text: str) -> dict[str, Any]:
    loaded = yaml.load(text, Loader=CfnLoader)  # a SafeLoader subclass: safe
    assert isinstance(loaded, dict)
    return loaded


def load_render() -> ModuleType:
    spec = importlib.util.spec_from_file_location("render", ROOT / "deploy" / "aws" / "render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TEMPLATE_TEXT = TEMPLATE.read_text()
RAW = parse(TEMPLATE_TEXT)


class Stack:
    """The template evaluated for one set of parameters."""

    def __init__(self, template: dict[str, Any], overrides: dict[str, str]) -> None:
        self.template = template
        self.params: dict[str, Any] = {}
        for name, spec in template["Parameters"].items():
            value = overrides.get(name, spec.get("Default"))
            assert value is not None, f"parameter {name} has no default: give it in the test"
            if spec["Type"] == "CommaDelimitedList":
                value = [item.strip() for item in str(value).split(",")]
            self.params[name] = value
        assert set(overrides) <= set(self.params), "unknown parameter in the test"
        self.conditions: dict[str, bool] = {}
        for name in template["Conditions"]:
            self.condition(name)
        self.resources = {
            name: self.resolve(resource)
            for name, resource in template["Resources"].items()
            if "Condition" not in resource or self.condition(resource["Condition"])
        }

    def condition(self, name: str) -> bool:
        if name not in self.conditions:
            self.conditions[name] = self._truth(self.template["Conditions"][name])
        return self.conditions[name]

    def _truth(self, node: Any) -> bool:
        ((function, args),) = node.items()
        if function == "Condition":
            return self.condition(args)
        if function == "Fn::Equals":
            left, right = (self.resolve(arg) for arg in args)
            return bool(left == right)
        if function == "Fn::Not":
            return not self._truth(args[0])
        if function == "Fn::And":
            return all(self._truth(arg) for arg in args)
        if function == "Fn::Or":
            return any(self._truth(arg) for arg in args)
        raise AssertionError(f"unexpected condition function {function}")

    def resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            items = [self.resolve(item) for item in node]
            return [item for item in items if item is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, value),) = node.items()
            if key == "Ref":
                if value == "AWS::NoValue":
                    return NO_VALUE
                return self.params.get(value, f"Ref:{value}")
            if key == "Fn::If":
                condition, when_true, when_false = value
                return self.resolve(when_true if self.condition(condition) else when_false)
            if key == "Fn::GetAtt":
                return f"GetAtt:{value[0]}.{value[1]}"
            if key == "Fn::Sub" and isinstance(value, str):
                return re.sub(r"\$\{([^}!]+)\}", self._substitute, value)
            if key == "Fn::Join":
                parts = self.resolve(value[1])
                if all(isinstance(part, str) for part in parts):
                    return str(value[0]).join(parts)
            if key == "Fn::Split":
                whole = self.resolve(value[1])
                if isinstance(whole, str):
                    return whole.split(value[0])
        resolved = {key: self.resolve(value) for key, value in node.items()}
        return {key: value for key, value in resolved.items() if value is not NO_VALUE}

    def _substitute(self, match: re.Match[str]) -> str:
        name = match.group(1)
        if "." in name:
            return f"GetAtt:{name}"
        value = self.params.get(name)
        return value if isinstance(value, str) else match.group(0)  # pseudo parameters stay

    def of_type(self, resource_type: str) -> dict[str, Any]:
        return {n: r for n, r in self.resources.items() if r["Type"] == resource_type}

    def key_arns(self) -> set[str]:
        return {f"GetAtt:{name}.Arn" for name in self.of_type("AWS::KMS::Key")}

    def proxy_identity_arn(self) -> str:
        if self.params["ProxyIdentity"] == "iam-user":
            return "GetAtt:ProxyUser.Arn"
        return "GetAtt:ProxyRole.Arn"


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def identity_statements(stack: Stack) -> list[dict[str, Any]]:
    """Every statement of every IAM policy the stack creates."""
    statements = []
    for policy in stack.of_type("AWS::IAM::ManagedPolicy").values():
        statements += as_list(policy["Properties"]["PolicyDocument"]["Statement"])
    return statements


SCENARIOS = [
    pytest.param({}, id="defaults-eks-one-key"),
    pytest.param({"KeyCount": "10", "CreateImportedKey": "true"}, id="ten-keys-and-imported"),
    pytest.param({"AllowDiscovery": "false", "KeyCount": "2"}, id="no-discovery"),
    pytest.param({"ProxyIdentity": "ec2-instance-profile", "KeyCount": "3"}, id="ec2"),
    pytest.param({"ProxyIdentity": "iam-user", "KeyCount": "2"}, id="iam-user"),
    pytest.param(
        {"KeyAdministratorArns": "arn:aws:iam::111122223333:role/KeyAdmin*"}, id="named-admins"
    ),
]


# --- the proxy identity's IAM policies ------------------------------------------------------


@pytest.mark.parametrize("overrides", SCENARIOS)
def test_identity_policies_grant_no_action_beyond_the_allowed_list(
    overrides: dict[str, str],
) -> None:
    stack = Stack(RAW, overrides)
    statements = identity_statements(stack)

    assert statements
    for statement in statements:
        assert statement["Effect"] == "Allow"
        assert not {"NotAction", "NotResource", "NotPrincipal"} & set(statement)
        actions = set(as_list(statement["Action"]))
        assert actions <= ALLOWED_ACTIONS, actions - ALLOWED_ACTIONS
    for kind in ("AWS::IAM::Role", "AWS::IAM::User"):
        for name, resource in stack.of_type(kind).items():
            assert "Policies" not in resource["Properties"], f"{name} has an inline policy"
            assert "ManagedPolicyArns" not in resource["Properties"], f"{name} has AWS policies"


@pytest.mark.parametrize("overrides", SCENARIOS)
def test_sign_is_granted_on_the_stacks_keys_only_and_only_for_digests(
    overrides: dict[str, str],
) -> None:
    stack = Stack(RAW, overrides)
    signing = [s for s in identity_statements(stack) if "kms:Sign" in as_list(s["Action"])]

    assert len(signing) == 1
    (statement,) = signing
    resources = as_list(statement["Resource"])
    assert "*" not in resources
    assert set(resources) == stack.key_arns()
    assert len(resources) == len(stack.key_arns())
    assert statement["Condition"] == {
        "StringEquals": {"kms:MessageType": "DIGEST", "kms:SigningAlgorithm": "ECDSA_SHA_256"}
    }


@pytest.mark.parametrize("overrides", SCENARIOS)
def test_only_the_list_actions_have_a_wildcard_resource(overrides: dict[str, str]) -> None:
    stack = Stack(RAW, overrides)

    for statement in identity_statements(stack):
        actions = set(as_list(statement["Action"]))
        resources = as_list(statement["Resource"])
        if any("*" in str(resource) for resource in resources):
            assert resources == ["*"]
            assert actions <= UNSCOPABLE_ACTIONS
        else:
            assert set(resources) == stack.key_arns(), statement["Sid"]


@pytest.mark.parametrize(
    ("overrides", "granted"),
    [
        pytest.param({}, ALLOWED_ACTIONS, id="discovery-allowed"),
        pytest.param(
            {"AllowDiscovery": "false"},
            {"kms:Sign", "kms:GetPublicKey", "kms:DescribeKey"},
            id="discovery-off",
        ),
    ],
)
def test_discovery_reads_come_and_go_with_allow_discovery(
    overrides: dict[str, str], granted: set[str]
) -> None:
    stack = Stack(RAW, overrides)

    actions = set().union(*(as_list(s["Action"]) for s in identity_statements(stack)))

    assert actions == granted


@pytest.mark.parametrize(
    ("identity", "roles", "users", "extra"),
    [
        pytest.param("eks-irsa", ["Ref:ProxyRole"], None, set(), id="eks-irsa"),
        pytest.param(
            "ec2-instance-profile",
            ["Ref:ProxyRole"],
            None,
            {"ProxyInstanceProfile"},
            id="ec2-instance-profile",
        ),
        pytest.param("iam-user", None, ["Ref:ProxyUser"], set(), id="iam-user"),
    ],
)
def test_policies_attach_to_exactly_the_chosen_identity(
    identity: str, roles: list[str] | None, users: list[str] | None, extra: set[str]
) -> None:
    stack = Stack(RAW, {"ProxyIdentity": identity})
    identities = {"ProxyRole", "ProxyUser", "ProxyInstanceProfile"} & set(stack.resources)

    assert identities == ({"ProxyRole"} if roles else {"ProxyUser"}) | extra
    for policy in stack.of_type("AWS::IAM::ManagedPolicy").values():
        assert policy["Properties"].get("Roles") == roles
        assert policy["Properties"].get("Users") == users
    # No access key in the stack: its secret would sit in the stack's outputs or state.
    assert not stack.of_type("AWS::IAM::AccessKey")


def test_eks_role_trusts_only_the_clusters_service_account() -> None:
    stack = Stack(RAW, {"EksOidcIssuer": "https://oidc.eks.us-east-1.amazonaws.com/id/ABC"})

    document, variables = stack.resources["ProxyRole"]["Properties"]["AssumeRolePolicyDocument"][
        "Fn::Sub"
    ]
    assert set(variables) == {"Issuer"}
    trust = json.loads(document)
    (statement,) = trust["Statement"]
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement["Principal"] == {
        "Federated": "arn:${AWS::Partition}:iam::${AWS::AccountId}:oidc-provider/${Issuer}"
    }
    assert statement["Condition"] == {
        "StringEquals": {
            "${Issuer}:sub": "system:serviceaccount:${KubernetesNamespace}:"
            "${KubernetesServiceAccount}",
            "${Issuer}:aud": "sts.amazonaws.com",
        }
    }


def test_ec2_role_trusts_only_ec2() -> None:
    stack = Stack(RAW, {"ProxyIdentity": "ec2-instance-profile"})

    trust = stack.resources["ProxyRole"]["Properties"]["AssumeRolePolicyDocument"]

    assert trust["Statement"] == [
        {
            "Effect": "Allow",
            "Principal": {"Service": "ec2.${AWS::URLSuffix}"},
            "Action": "sts:AssumeRole",
        }
    ]


# --- the keys ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "keys"),
    [
        pytest.param({}, {"Key1"}, id="one"),
        pytest.param({"KeyCount": "3"}, {"Key1", "Key2", "Key3"}, id="three"),
        pytest.param({"KeyCount": "10"}, {f"Key{n}" for n in range(1, 11)}, id="ten"),
        pytest.param(
            {"KeyCount": "2", "CreateImportedKey": "true"},
            {"Key1", "Key2", "ImportedKey"},
            id="two-and-imported",
        ),
    ],
)
def test_key_count_creates_that_many_keys_each_with_an_alias(
    overrides: dict[str, str], keys: set[str]
) -> None:
    stack = Stack(RAW, overrides)

    assert set(stack.of_type("AWS::KMS::Key")) == keys
    aliases = stack.of_type("AWS::KMS::Alias").values()
    assert {a["Properties"]["TargetKeyId"] for a in aliases} == {f"Ref:{k}" for k in keys}


def test_every_key_is_a_secp256k1_signing_key_retained_with_discovery_tags() -> None:
    keys = {n: r for n, r in RAW["Resources"].items() if r["Type"] == "AWS::KMS::Key"}

    assert len(keys) == load_render().MAX_KEYS + 1
    for name, key in keys.items():
        assert key["DeletionPolicy"] == "Retain", name
        assert key["UpdateReplacePolicy"] == "Retain", name
        properties = key["Properties"]
        assert properties["KeySpec"] == "ECC_SECG_P256K1"
        assert properties["KeyUsage"] == "SIGN_VERIFY"
        assert properties["PendingWindowInDays"] == 30
        assert properties["Tags"] == [
            {"Key": "app", "Value": "signer-proxy"},
            {"Key": "env", "Value": {"Ref": "EnvironmentTag"}},
        ]
        assert properties.get("Origin", "AWS_KMS") == (
            "EXTERNAL" if name == "ImportedKey" else "AWS_KMS"
        )


def test_every_key_has_the_same_key_policy() -> None:
    policies = [
        json.dumps(r["Properties"]["KeyPolicy"], sort_keys=True)
        for r in RAW["Resources"].values()
        if r["Type"] == "AWS::KMS::Key"
    ]

    assert len(set(policies)) == 1


@pytest.mark.parametrize("overrides", SCENARIOS)
def test_key_policy_lets_administrators_manage_but_only_the_proxy_sign(
    overrides: dict[str, str],
) -> None:
    stack = Stack(RAW, overrides)
    root = "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"

    for key in stack.of_type("AWS::KMS::Key").values():
        statements = key["Properties"]["KeyPolicy"]["Statement"]
        admin, *proxy = statements
        assert admin["Principal"] == {"AWS": root}
        assert not any("*" in action for action in admin["Action"])
        assert not set(admin["Action"]) & CRYPTO_ACTIONS
        if overrides.get("KeyAdministratorArns"):
            assert admin["Condition"] == {
                "ArnLike": {"aws:PrincipalArn": [overrides["KeyAdministratorArns"]]}
            }
        else:
            assert "Condition" not in admin  # the account's IAM decides who administers
        signing = [s for s in statements if "kms:Sign" in as_list(s["Action"])]
        assert len(signing) == 1
        for statement in proxy:
            assert statement["Effect"] == "Allow"
            assert statement["Principal"] == {"AWS": root}
            assert set(as_list(statement["Action"])) <= PROXY_KEY_ACTIONS
            assert statement["Condition"]["ArnEquals"] == {
                "aws:PrincipalArn": stack.proxy_identity_arn()
            }
        assert signing[0]["Condition"]["StringEquals"] == {
            "kms:MessageType": "DIGEST",
            "kms:SigningAlgorithm": "ECDSA_SHA_256",
        }


@pytest.mark.parametrize(
    ("prefix", "allowed"),
    [
        pytest.param("signer-proxy", True, id="default"),
        pytest.param("team/signer_2", True, id="nested"),
        pytest.param("awsome", True, id="starts-with-aws-letters"),
        pytest.param("aws", False, id="aws-reserved"),
        pytest.param("aws/signer", False, id="aws-slash-reserved"),
        pytest.param("alias/signer", False, id="alias-given-twice"),
        pytest.param("a//b", False, id="empty-segment"),
        pytest.param("", False, id="empty"),
    ],
)
def test_alias_prefix_refuses_reserved_and_malformed_prefixes(prefix: str, allowed: bool) -> None:
    # CloudFormation matches AllowedPattern as a Java regex; this one means the same in Python.
    pattern = RAW["Parameters"]["AliasPrefix"]["AllowedPattern"]

    assert bool(re.fullmatch(pattern, prefix)) is allowed


# --- the template as a file -------------------------------------------------------------------


def test_template_is_what_render_py_writes() -> None:
    assert load_render().render() == TEMPLATE_TEXT, (
        "deploy/aws/signer-proxy.yaml is stale: "
        "python deploy/aws/render.py > deploy/aws/signer-proxy.yaml"
    )


def test_template_fits_in_a_template_body() -> None:
    # aws cloudformation deploy without --s3-bucket sends the template inline: 51,200 bytes.
    assert len(TEMPLATE_TEXT.encode()) < 51_200


def test_delete_opt_in_changes_only_the_keys_deletion_policies() -> None:
    throwaway = parse(load_render().render(deletion_policy="Delete"))

    for name, resource in RAW["Resources"].items():
        other = throwaway["Resources"][name]
        if resource["Type"] == "AWS::KMS::Key":
            assert (other["DeletionPolicy"], other["UpdateReplacePolicy"]) == ("Delete", "Delete")
            resource, other = dict(resource), dict(other)
            for attribute in ("DeletionPolicy", "UpdateReplacePolicy"):
                del resource[attribute], other[attribute]
        assert other == resource, name


def test_render_writes_the_asked_number_of_key_slots() -> None:
    template = parse(load_render().render(max_keys=12))

    assert template["Parameters"]["KeyCount"]["AllowedValues"] == [str(n) for n in range(1, 13)]
    assert "Key12" in template["Resources"] and "Key13" not in template["Resources"]
    assert set(Stack(template, {"KeyCount": "12"}).of_type("AWS::KMS::Key")) == {
        f"Key{n}" for n in range(1, 13)
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"deletion_policy": "Snapshot"}, "deletion policy", id="bad-policy"),
        pytest.param({"max_keys": 1}, "max_keys", id="one-slot"),
    ],
)
def test_render_refuses_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_render().render(**kwargs)


def test_templates_pass_cfn_lint(tmp_path: Path) -> None:
    render = load_render()
    # The variant is smaller: cfn-lint's time grows steeply with the number of key slots.
    variant = tmp_path / "three-keys-delete.yaml"
    variant.write_text(render.render(max_keys=3, deletion_policy="Delete"))
    cfn_lint = Path(sys.executable).parent / "cfn-lint"

    result = subprocess.run(
        [str(cfn_lint), "--", str(TEMPLATE), str(variant)],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_docs_name_every_parameter_and_output() -> None:
    docs = DOCS.read_text()

    missing = [name for name in [*RAW["Parameters"], *RAW["Outputs"]] if name not in docs]

    assert not missing, f"docs/aws.md does not mention {missing}"
