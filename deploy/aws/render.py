"""Render the CloudFormation template deploy/aws/signer-proxy.yaml.

CloudFormation has no loops without the AWS::LanguageExtensions transform, and a policy can only
name each key's ARN if each key is its own resource: so the template holds MAX_KEYS key slots,
switched on by the KeyCount parameter, and this script writes them out identically. The
committed template is this script's default output (a test fails when it is stale).

    python deploy/aws/render.py > deploy/aws/signer-proxy.yaml          # the committed one
    python deploy/aws/render.py --max-keys 25 > my-signer-proxy.yaml     # more slots
    python deploy/aws/render.py --deletion-policy Delete > throwaway.yaml  # opt-in to delete

`--deletion-policy Delete` is the documented opt-in to delete: with it, deleting the stack (or
replacing a key) schedules the KMS keys for deletion after a 30-day waiting period. Use it only
for keys that will never hold funds (test stacks).
"""

from __future__ import annotations

import argparse
import sys

MAX_KEYS = 10
DELETION_POLICIES = ("Retain", "Delete")
TEMPLATE_BODY_LIMIT = 51_200  # bytes CloudFormation accepts inline (without an S3 bucket)

# What a key administrator may do: manage the key's life, aliases, tags, policy and imported
# material, but not sign (nor any other cryptographic use, nor grants, which could hand
# signing to someone else behind the key policy's back).
ADMIN_ACTIONS = (
    "kms:CancelKeyDeletion",
    "kms:CreateAlias",
    "kms:DeleteAlias",
    "kms:DeleteImportedKeyMaterial",
    "kms:DescribeKey",
    "kms:DisableKey",
    "kms:EnableKey",
    "kms:GetKeyPolicy",
    "kms:GetKeyRotationStatus",
    "kms:GetParametersForImport",
    "kms:GetPublicKey",
    "kms:ImportKeyMaterial",
    "kms:ListGrants",
    "kms:ListKeyPolicies",
    "kms:ListResourceTags",
    "kms:PutKeyPolicy",
    "kms:RevokeGrant",
    "kms:ScheduleKeyDeletion",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:UpdateAlias",
    "kms:UpdateKeyDescription",
)
# What the proxy's identity may do with a key: sign digests, read the key, read its tags.
PROXY_READ_ACTIONS = ("kms:DescribeKey", "kms:GetPublicKey", "kms:ListResourceTags")

ROOT_ARN = '!Sub "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"'
PROXY_ARN = "!If [UseIamUser, !GetAtt ProxyUser.Arn, !GetAtt ProxyRole.Arn]"


def _indent(text: str, spaces: int) -> str:
    pad = " " * spaces
    return "\n".join(pad + line if line else line for line in text.splitlines())


def _flow(items: tuple[str, ...], spaces: int, width: int = 98) -> str:
    """A YAML flow sequence of `items`, wrapped to `width` with continuation at `spaces`."""
    lines, line = [], "["
    for index, item in enumerate(items):
        piece = item + ("]" if index == len(items) - 1 else ", ")
        if len(line) + len(piece) + spaces > width:
            lines.append(line.rstrip())
            line = " " * (spaces + 1)
        line += piece
    return "\n".join([*lines, line])


def key_policy() -> str:
    """The key policy every key gets (indented for a key's Properties).

    Administrators (the account's IAM principals, or only KeyAdministratorArns when given)
    manage the key; none of their actions signs. The account root is the principal so the key
    can never become unmanageable; the condition narrows it to the listed principals. Only the
    proxy's identity signs, only 32-byte digests with ECDSA_SHA_256 (what signer-proxy sends),
    and only if its own IAM policy allows it too. Matching aws:PrincipalArn rather than naming
    the role or user as principal keeps key creation clear of IAM's propagation delay.
    """
    return f"""\
KeyPolicy:
  Version: "2012-10-17"
  Statement:
    - Sid: KeyAdministratorsManageButCannotSign
      Effect: Allow
      Principal: {{AWS: {ROOT_ARN}}}
      Action: {_flow(ADMIN_ACTIONS, 14)}
      Resource: "*"
      Condition: !If
        - HasKeyAdministrators
        - {{ArnLike: {{aws:PrincipalArn: !Ref KeyAdministratorArns}}}}
        - !Ref AWS::NoValue
    - Sid: ProxyIdentitySignsDigestsOnly
      Effect: Allow
      Principal: {{AWS: {ROOT_ARN}}}
      Action: kms:Sign
      Resource: "*"
      Condition:
        ArnEquals: {{aws:PrincipalArn: {PROXY_ARN}}}
        StringEquals: {{kms:MessageType: DIGEST, kms:SigningAlgorithm: ECDSA_SHA_256}}
    - Sid: ProxyIdentityReadsTheKey
      Effect: Allow
      Principal: {{AWS: {ROOT_ARN}}}
      Action: {_flow(PROXY_READ_ACTIONS, 14)}
      Resource: "*"
      Condition:
        ArnEquals: {{aws:PrincipalArn: {PROXY_ARN}}}"""


def key_tags() -> str:
    """Tags that discovery (`--kms-tag app=signer-proxy --kms-tag env=...`) selects on."""
    return "Tags: [{Key: app, Value: signer-proxy}, {Key: env, Value: !Ref EnvironmentTag}]"


def key_slot(n: int, deletion_policy: str) -> str:
    """Key n and its alias, present when KeyCount >= n."""
    condition = "" if n == 1 else f"    Condition: HasKey{n}\n"
    return f"""\
  Key{n}:
    Type: AWS::KMS::Key
{condition}    DeletionPolicy: {deletion_policy}
    UpdateReplacePolicy: {deletion_policy}
    Properties:
      Description: !Sub "signer-proxy signing key {n} (stack ${{AWS::StackName}})"
      KeySpec: ECC_SECG_P256K1
      KeyUsage: SIGN_VERIFY
      PendingWindowInDays: 30
{_indent(key_policy(), 6)}
{_indent(key_tags(), 6)}
  Alias{n}:
    Type: AWS::KMS::Alias
{condition}    Properties:
      AliasName: !Sub "alias/${{AliasPrefix}}/key-{n}"
      TargetKeyId: !Ref Key{n}
"""


def imported_key(deletion_policy: str) -> str:
    """The optional EXTERNAL-origin key: empty (PendingImport) until key material is imported."""
    return f"""\
  ImportedKey:
    Type: AWS::KMS::Key
    Condition: WantsImportedKey
    DeletionPolicy: {deletion_policy}
    UpdateReplacePolicy: {deletion_policy}
    Properties:
      Description: !Sub "signer-proxy imported (BYOK) signing key (stack ${{AWS::StackName}})"
      Origin: EXTERNAL
      KeySpec: ECC_SECG_P256K1
      KeyUsage: SIGN_VERIFY
      PendingWindowInDays: 30
{_indent(key_policy(), 6)}
{_indent(key_tags(), 6)}
  ImportedKeyAlias:
    Type: AWS::KMS::Alias
    Condition: WantsImportedKey
    Properties:
      AliasName: !Sub "alias/${{AliasPrefix}}/imported"
      TargetKeyId: !Ref ImportedKey
"""


def key_arns(max_keys: int, spaces: int) -> str:
    """Every created key's ARN, for a policy's Resource.

    One comma-joined string split again, rather than a list of Fn::If with AWS::NoValue: the
    same list in CloudFormation, but cfn-lint checks it in half the time, and moto (which keeps
    AWS::NoValue in lists as null) builds the same policy AWS does.
    """
    lines = ["Resource: !Split", '  - ","', "  - !Join", '    - ""', "    - - !GetAtt Key1.Arn"]
    lines += [
        f'      - !If [HasKey{n}, !Sub ",${{Key{n}.Arn}}", ""]' for n in range(2, max_keys + 1)
    ]
    lines.append('      - !If [WantsImportedKey, !Sub ",${ImportedKey.Arn}", ""]')
    return "\n".join(" " * spaces + line for line in lines)


def _joined(max_keys: int, first: str, rest: str, spaces: int, nested: bool = False) -> str:
    """Items of a Fn::Join list over key slots: `first` for key 1, then `rest` (with {n}) for
    each key present, "" for each absent. `nested` starts a new list on the first line."""
    lines = [" " * (spaces - 2) + "- - " + first if nested else " " * spaces + "- " + first]
    lines += [
        " " * spaces + f'- !If [HasKey{n}, {rest.format(n=n)}, ""]' for n in range(2, max_keys + 1)
    ]
    return "\n".join(lines)


def conditions(max_keys: int) -> str:
    """HasKey<n> for n >= 2: KeyCount is at least n.

    Conditions are referenced in the long form {Condition: Name}: moto reads the short form
    !Condition as Fn::Condition and would evaluate it as false.
    """
    lines = []
    for n in range(2, max_keys + 1):
        more = f'!Not [!Equals [!Ref KeyCount, "{n - 1}"]]'
        if n == 2:
            lines.append(f"  HasKey{n}: {more}")
        else:
            lines.append(f"  HasKey{n}: !And [{{Condition: HasKey{n - 1}}}, {more}]")
    return "\n".join(lines)


HEADER = """\
# signer-proxy on AWS: secp256k1 signing keys in KMS and one identity that may only sign with
# them. Deploy, then follow docs/aws.md. GENERATED by deploy/aws/render.py: edit that, then
# `python deploy/aws/render.py > deploy/aws/signer-proxy.yaml`.
AWSTemplateFormatVersion: "2010-09-09"
Description: >-
  signer-proxy: up to {max_keys} ECC_SECG_P256K1 SIGN_VERIFY KMS keys (deletion policy
  {deletion_policy}) and a least-privilege identity (EKS IRSA role, EC2 instance profile or IAM
  user) that may only sign digests with them. See docs/aws.md.

Metadata:
  AWS::CloudFormation::Interface:
    ParameterGroups:
      - Label: {{default: Keys}}
        Parameters: [KeyCount, AliasPrefix, EnvironmentTag, CreateImportedKey, KeyAdministratorArns]
      - Label: {{default: Who runs the proxy}}
        Parameters:
          - ProxyIdentity
          - EksOidcIssuer
          - KubernetesNamespace
          - KubernetesServiceAccount
          - AllowDiscovery

Parameters:
  KeyCount:
    Type: String
    Description: >-
      How many signing keys to create (aliases alias/<AliasPrefix>/key-1 ...). Raising it adds
      keys; lowering it removes keys from the stack and the policies, and the keys themselves
      are {retained}.
    AllowedValues: [{counts}]
    Default: "1"
  AliasPrefix:
    Type: String
    Description: Aliases are alias/<AliasPrefix>/key-<n> (and alias/<AliasPrefix>/imported).
    Default: signer-proxy
    AllowedPattern: "^(?!aws(/|$)|alias/)[a-zA-Z0-9_-]+(/[a-zA-Z0-9_-]+)*$"
    ConstraintDescription: letters, digits, _ - and /; not aws (reserved by AWS), not alias/...
  EnvironmentTag:
    Type: String
    Description: >-
      Value of the env tag on every key; discovery selects the keys with
      --kms-tag app=signer-proxy --kms-tag env=<this>.
    Default: prod
    AllowedPattern: "^[a-zA-Z0-9_.:/=+@-]{{1,256}}$"
  CreateImportedKey:
    Type: String
    Description: >-
      Also create an EXTERNAL-origin key (alias/<AliasPrefix>/imported) for bringing your own
      key material (BYOK). It stays PendingImport, and unusable, until material is imported.
    AllowedValues: ["true", "false"]
    Default: "false"
  KeyAdministratorArns:
    Type: CommaDelimitedList
    Description: >-
      IAM principal ARNs (wildcards allowed, e.g. arn:aws:iam::111122223333:role/KeyAdmins*)
      that may administer the keys. Empty: any principal of this account whose IAM policies
      allow it. Administrators can never sign. Include the identity deploying this stack, or
      KMS refuses to create the keys.
    Default: ""
  ProxyIdentity:
    Type: String
    Description: >-
      What the proxy runs as. eks-irsa: an IAM role for a Kubernetes service account (IRSA).
      ec2-instance-profile: a role and instance profile for one EC2 instance. iam-user: an IAM
      user for a VM outside AWS (create its access key yourself; see docs/aws.md).
    AllowedValues: [eks-irsa, ec2-instance-profile, iam-user]
    Default: eks-irsa
  EksOidcIssuer:
    Type: String
    Description: >-
      eks-irsa only: the cluster's OIDC issuer URL (aws eks describe-cluster --name NAME
      --query cluster.identity.oidc.issuer --output text). Its IAM OIDC provider must exist.
    Default: ""
    AllowedPattern: "^(https://[^/]+/.+)?$"
    ConstraintDescription: an https:// issuer URL, as describe-cluster prints it
  KubernetesNamespace:
    Type: String
    Description: eks-irsa only. The namespace the proxy is installed in (helm install -n).
    Default: signer-proxy
  KubernetesServiceAccount:
    Type: String
    Description: eks-irsa only. The proxy's service account name (the chart's serviceAccount.name).
    Default: signer-proxy
  AllowDiscovery:
    Type: String
    Description: >-
      Grant the reads that key discovery (--kms-tag) needs: kms:ListKeys and kms:ListAliases
      (which IAM cannot narrow to keys) and kms:ListResourceTags on these keys. Not needed when
      the keys are named explicitly (--kms-key).
    AllowedValues: ["true", "false"]
    Default: "true"

Rules:
  EksNeedsTheClusterOidcIssuer:
    RuleCondition: !Equals [!Ref ProxyIdentity, eks-irsa]
    Assertions:
      - Assert: !Not [!Equals [!Ref EksOidcIssuer, ""]]
        AssertDescription: ProxyIdentity eks-irsa needs EksOidcIssuer (the cluster's issuer URL)

Conditions:
  UseEks: !Equals [!Ref ProxyIdentity, eks-irsa]
  UseEc2: !Equals [!Ref ProxyIdentity, ec2-instance-profile]
  UseIamUser: !Equals [!Ref ProxyIdentity, iam-user]
  UseRole: !Or [{{Condition: UseEks}}, {{Condition: UseEc2}}]
  HasKeyAdministrators: !Not [!Equals [!Join ["", !Ref KeyAdministratorArns], ""]]
  DiscoveryAllowed: !Equals [!Ref AllowDiscovery, "true"]
  WantsImportedKey: !Equals [!Ref CreateImportedKey, "true"]
{conditions}

Resources:
  ProxyRole:
    Type: AWS::IAM::Role
    Condition: UseRole
    Properties:
      Description: !Sub "signer-proxy (stack ${{AWS::StackName}}): may only sign with its keys"
      # IRSA: the condition keys are named after the issuer, and a key cannot be computed in
      # YAML, hence the JSON string. The issuer's "https://" is cut off by splitting
      # "<issuer>https://": the trailing separator keeps Fn::Select valid when it is empty.
      AssumeRolePolicyDocument: !If
        - UseEks
        - !Sub
          - |
            {{
              "Version": "2012-10-17",
              "Statement": [{{
                "Effect": "Allow",
                "Principal": {{
                  "Federated": "arn:${{AWS::Partition}}:iam::${{AWS::AccountId}}:oidc-provider/${{Issuer}}"
                }},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {{"StringEquals": {{
                  "${{Issuer}}:sub": "system:serviceaccount:${{KubernetesNamespace}}:${{KubernetesServiceAccount}}",
                  "${{Issuer}}:aud": "sts.amazonaws.com"
                }}}}
              }}]
            }}
          - Issuer: !Select [1, !Split ["https://", !Sub "${{EksOidcIssuer}}https://"]]
        - Version: "2012-10-17"
          Statement:
            - Effect: Allow
              Principal:
                Service: !Sub "ec2.${{AWS::URLSuffix}}"
              Action: sts:AssumeRole
      Tags:
        - Key: app
          Value: signer-proxy
  ProxyInstanceProfile:
    Type: AWS::IAM::InstanceProfile
    Condition: UseEc2
    Properties:
      Roles: [!Ref ProxyRole]
  ProxyUser:
    Type: AWS::IAM::User
    Condition: UseIamUser
    Properties:
      Tags:
        - Key: app
          Value: signer-proxy
  # The least-privilege policy, for whichever identity runs the proxy: sign and read these
  # keys, nothing else.
  ProxyKmsPolicy:
    Type: AWS::IAM::ManagedPolicy
    Properties:
      Description: !Sub "signer-proxy (stack ${{AWS::StackName}}): sign with these keys only"
      Roles: !If [UseRole, [!Ref ProxyRole], !Ref AWS::NoValue]
      Users: !If [UseIamUser, [!Ref ProxyUser], !Ref AWS::NoValue]
      PolicyDocument:
        Version: "2012-10-17"
        Statement:
          - Sid: SignDigestsWithTheseKeysOnly
            Effect: Allow
            Action: kms:Sign
{key_arns_12}
            Condition:
              StringEquals:
                kms:MessageType: DIGEST
                kms:SigningAlgorithm: ECDSA_SHA_256
          - Sid: ReadTheseKeys
            Effect: Allow
            Action: [kms:DescribeKey, kms:GetPublicKey]
{key_arns_12}
  # What key discovery (--kms-tag) adds: a policy of its own, so that AllowDiscovery=false
  # removes it whole.
  ProxyDiscoveryPolicy:
    Type: AWS::IAM::ManagedPolicy
    Condition: DiscoveryAllowed
    Properties:
      Description: !Sub "signer-proxy (stack ${{AWS::StackName}}): find its keys by tag"
      Roles: !If [UseRole, [!Ref ProxyRole], !Ref AWS::NoValue]
      Users: !If [UseIamUser, [!Ref ProxyUser], !Ref AWS::NoValue]
      PolicyDocument:
        Version: "2012-10-17"
        Statement:
          # ListKeys and ListAliases have no resource to narrow them to: they list the
          # account's key ids and alias names in this Region, nothing more.
          - Sid: ListKeyIdsAndAliases
            Effect: Allow
            Action: [kms:ListAliases, kms:ListKeys]
            Resource: "*"
          - Sid: ReadTheseKeysTags
            Effect: Allow
            Action: kms:ListResourceTags
{key_arns_12}
"""  # noqa: E501 - the IRSA trust policy is JSON in a string: its lines cannot wrap

OUTPUTS = """\
Outputs:
  KeyArns:
    Description: The signing keys' ARNs, comma-separated (the imported key is ImportedKeyArn).
    Value: !Join
      - ""
{key_arns_joined}
  KeyAliases:
    Description: The signing keys' aliases, comma-separated.
    Value: !Join
      - ""
{key_aliases_joined}
  ImportedKeyArn:
    Condition: WantsImportedKey
    Description: The EXTERNAL-origin key, PendingImport until `signer-proxy keys import`.
    Value: !GetAtt ImportedKey.Arn
  ImportedKeyAlias:
    Condition: WantsImportedKey
    Description: Its alias; add it to kms_keys once its key material is imported.
    Value: !Sub "alias/${{AliasPrefix}}/imported"
  RoleArn:
    Condition: UseRole
    Description: The proxy's IAM role.
    Value: !GetAtt ProxyRole.Arn
  InstanceProfileName:
    Condition: UseEc2
    Description: Attach this instance profile to the proxy's EC2 instance.
    Value: !Ref ProxyInstanceProfile
  UserName:
    Condition: UseIamUser
    Description: The proxy's IAM user; create its access key with aws iam create-access-key.
    Value: !Ref ProxyUser
  PolicyArn:
    Description: The least-privilege signing policy attached to the proxy's identity.
    Value: !Ref ProxyKmsPolicy
  DiscoveryPolicyArn:
    Condition: DiscoveryAllowed
    Description: The key-discovery policy attached to the proxy's identity.
    Value: !Ref ProxyDiscoveryPolicy
  KmsTagArgs:
    Description: Flags that select these keys by tag (key discovery).
    Value: !Sub "--kms-tag app=signer-proxy --kms-tag env=${{EnvironmentTag}}"
  ServeArgs:
    Description: Flags for signer-proxy serve naming these keys (add --upstream).
    Value: !Join
      - ""
      - - !Sub "--aws-region ${{AWS::Region}}"
{serve_args_joined}
  HelmValues:
    Condition: UseEks
    Description: Helm values for helm/signer-proxy (save as a file, helm install -f it).
    Value: !Join
      - ""
      - - "serviceAccount:\\n  create: true\\n  name: "
        - !Ref KubernetesServiceAccount
        - "\\n  annotations:\\n    eks.amazonaws.com/role-arn: "
        - !GetAtt ProxyRole.Arn
        - "\\nconfig:\\n  aws_region: "
        - !Ref AWS::Region
        - "\\n  kms_keys:"
{helm_keys_joined}
        - "\\n"
"""


def render(max_keys: int = MAX_KEYS, deletion_policy: str = "Retain") -> str:
    """The whole template, with `max_keys` key slots and this deletion policy on every key."""
    if deletion_policy not in DELETION_POLICIES:
        raise ValueError(f"deletion policy must be one of {DELETION_POLICIES}")
    if not 2 <= max_keys <= 100:  # with one slot, KeyCount would have nothing to count
        raise ValueError("max_keys must be between 2 and 100")
    header = HEADER.format(
        max_keys=max_keys,
        deletion_policy=deletion_policy,
        retained="retained" if deletion_policy == "Retain" else "scheduled for deletion",
        counts=", ".join(f'"{n}"' for n in range(1, max_keys + 1)),
        conditions=conditions(max_keys),
        key_arns_12=key_arns(max_keys, 12),
    )
    slots = "".join(key_slot(n, deletion_policy) for n in range(1, max_keys + 1))
    outputs = OUTPUTS.format(
        key_arns_joined=_joined(
            max_keys, "!GetAtt Key1.Arn", '!Sub ",${{Key{n}.Arn}}"', 8, nested=True
        ),
        key_aliases_joined=_joined(
            max_keys,
            '!Sub "alias/${AliasPrefix}/key-1"',
            '!Sub ",alias/${{AliasPrefix}}/key-{n}"',
            8,
            nested=True,
        ),
        serve_args_joined=_joined(
            max_keys,
            '!Sub " --kms-key alias/${AliasPrefix}/key-1"',
            '!Sub " --kms-key alias/${{AliasPrefix}}/key-{n}"',
            8,
        ),
        helm_keys_joined=_joined(
            max_keys,
            '!Sub "\\n    - alias/${AliasPrefix}/key-1"',
            '!Sub "\\n    - alias/${{AliasPrefix}}/key-{n}"',
            8,
        ),
    )
    return header + slots + imported_key(deletion_policy) + "\n" + outputs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-keys", type=int, default=MAX_KEYS, help="key slots (2-100)")
    parser.add_argument(
        "--deletion-policy",
        choices=DELETION_POLICIES,
        default="Retain",
        help="on every key: Retain (default) or Delete (opt-in, test stacks only)",
    )
    args = parser.parse_args(argv)
    template = render(args.max_keys, args.deletion_policy)
    if len(template.encode()) > TEMPLATE_BODY_LIMIT:
        print(
            f"note: {len(template.encode())} bytes is over CloudFormation's inline limit of "
            f"{TEMPLATE_BODY_LIMIT}: deploy it with --s3-bucket",
            file=sys.stderr,
        )
    sys.stdout.write(template)


if __name__ == "__main__":
    main()
