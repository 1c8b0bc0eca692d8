"""Sign one AWS KMS request with Signature Version 4 (botocore, from the venv scripts/setup
makes) for the load harness, and print its headers, one per line.

wrk then sends that same request for a whole row: the server checks the whole signature each
time (parse, canonical request, SHA-256 of the body, HMAC with the signing key it keeps), as
it does for any client. A signature stays valid for 5 minutes and is not refused when it comes
again (nor is it by AWS), so one signing covers a row.

Usage: sign-aws.py <url> <target> <body> <access key id> <secret>"""
import sys

import botocore.auth
import botocore.awsrequest
import botocore.credentials

url, target, body, key_id, secret = sys.argv[1:6]
request = botocore.awsrequest.AWSRequest(
    method="POST",
    url=url,
    data=body,
    headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": target},
)
credentials = botocore.credentials.Credentials(key_id, secret)
botocore.auth.SigV4Auth(credentials, "kms", "eu-west-1").add_auth(request)
for name, value in request.headers.items():
    print(f"{name}: {value}")
