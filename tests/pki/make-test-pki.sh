#!/bin/sh
# Creates the test PKI used by the mock APNs server and the tests:
#   ca.pem/.key                 "xaps test CA"
#   server.pem/.key             localhost (DNS:localhost, IP:127.0.0.1), signed by the CA
#   client.pem/.key/.p12        an Apple-like push certificate (UID = the APNs topic), p12 password "test"
#   client-short-topic.pem/.key UID=com.apple.mail.nil
#   untrusted-ca.pem, client-untrusted.pem/.key   a client signed by another CA
#   client-expired.pem/.key     signed by the CA, notAfter in the past
#   topic.txt                   the UID of client.pem
# Idempotent: when every output exists and is newer than this script, nothing
# is regenerated.
# Usage: make-test-pki.sh OUTDIR
set -eu

if [ $# -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
outdir=$1

account_uuid=0b5f6d3e-8f1c-4f8e-9c3a-2d1e0f9a8b7c
topic=com.apple.mail.XServer.$account_uuid
outputs="ca.pem ca.key server.pem server.key client.pem client.key client.p12
client-short-topic.pem client-short-topic.key untrusted-ca.pem untrusted-ca.key
client-untrusted.pem client-untrusted.key client-expired.pem client-expired.key topic.txt"

up_to_date=yes
for f in $outputs; do
    if [ ! -s "$outdir/$f" ] || [ "$0" -nt "$outdir/$f" ]; then
        up_to_date=no
    fi
done
if [ "$up_to_date" = yes ]; then
    exit 0
fi

mkdir -p "$outdir"
# Build in a scratch directory and move into place at the end so that an
# interrupted run never leaves a half-made PKI that looks complete.
work=$(mktemp -d "$outdir/.pki-tmp.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
cd "$work"

newkey() {
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" 2>/dev/null
}

make_ca() { # name subject
    newkey "$1.key"
    openssl req -new -x509 -key "$1.key" -out "$1.pem" -days 3650 -subj "$2" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign"
}

# sign name subject ca extensions-file [days]
sign() {
    newkey "$1.key"
    openssl req -new -key "$1.key" -out "$1.csr" -subj "$2"
    openssl x509 -req -in "$1.csr" -CA "$3.pem" -CAkey "$3.key" -CAcreateserial \
        -out "$1.pem" -days "${5:-3650}" -extfile "$4" 2>/dev/null
    rm -f "$1.csr"
}

cat > server.ext <<'EXT'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1
EXT
cat > client.ext <<'EXT'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth
EXT

client_subject() { # topic
    echo "/UID=$1/CN=APSP:$account_uuid/C=US"
}

make_ca ca "/CN=xaps test CA/O=dovecot-xaps tests"
make_ca untrusted-ca "/CN=xaps untrusted test CA/O=dovecot-xaps tests"
sign server "/CN=localhost/O=dovecot-xaps tests" ca server.ext
sign client "$(client_subject "$topic")" ca client.ext
sign client-short-topic "$(client_subject com.apple.mail.nil)" ca client.ext
sign client-untrusted "$(client_subject "$topic")" untrusted-ca client.ext

# An expired certificate needs an explicit validity window in the past, which
# only "openssl ca" can set on OpenSSL 3.0.
newkey client-expired.key
openssl req -new -key client-expired.key -out client-expired.csr -subj "$(client_subject "$topic")"
mkdir ca-db
: > ca-db/index.txt
cat > ca-db/ca.cnf <<EOF2
[ ca ]
default_ca = test_ca
[ test_ca ]
dir = ca-db
database = ca-db/index.txt
new_certs_dir = ca-db
serial = ca-db/serial
default_md = sha256
policy = accept_anything
x509_extensions = client_ext
unique_subject = no
[ accept_anything ]
UID = optional
CN = optional
C = optional
[ client_ext ]
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth
EOF2
echo 1000 > ca-db/serial
openssl ca -batch -config ca-db/ca.cnf -cert ca.pem -keyfile ca.key -preserveDN -notext \
    -startdate 20200101000000Z -enddate 20200102000000Z \
    -in client-expired.csr -out client-expired.pem 2>/dev/null
rm -rf ca-db client-expired.csr

openssl pkcs12 -export -in client.pem -inkey client.key -certfile ca.pem \
    -name "Apple Push Services: $topic" -passout pass:test -out client.p12
printf '%s\n' "$topic" > topic.txt

for f in $outputs; do
    mv -f "$f" "../$f"
done
