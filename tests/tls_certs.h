// Certificates made at test time with the openssl CLI, for the TLS tests
// (docs/registry.md and docs/operations.md, "TLS"): a private CA, a server
// certificate signed by it for localhost and 127.0.0.1 (subjectAltName),
// and a second CA that signed nothing the server holds.
//
//   if (!HaveOpenssl()) POLIS_MISSING_PREREQ() << "the openssl CLI is not installed";
//   TestCerts c = MakeTestCerts(dir);   // c.error says why when it failed
#pragma once

#include <cstdlib>
#include <string>

namespace polis::test {

struct TestCerts {
  std::string ca;           // the CA that signed server_cert (PEM)
  std::string other_ca;     // a CA that signed nothing here
  std::string server_cert;  // CN=localhost, SAN DNS:localhost, IP:127.0.0.1
  std::string server_key;
  std::string other_key;    // a valid key that is not server_cert's
  std::string error;        // "" when all were made
};

inline bool HaveOpenssl() { return std::system("command -v openssl >/dev/null 2>&1") == 0; }

inline TestCerts MakeTestCerts(const std::string& dir) {
  TestCerts c;
  c.ca = dir + "/ca.pem";
  c.other_ca = dir + "/other-ca.pem";
  c.server_cert = dir + "/server.pem";
  c.server_key = dir + "/server.key";
  c.other_key = dir + "/other.key";
  const std::string cmd =
      "set -e; cd '" + dir + "'; "
      "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 "
      "  -subj '/CN=Polis Test CA' -addext 'basicConstraints=critical,CA:TRUE' "
      "  -addext 'keyUsage=critical,keyCertSign,cRLSign'; "
      "openssl req -x509 -newkey rsa:2048 -nodes -keyout other-ca.key -out other-ca.pem -days 2 "
      "  -subj '/CN=Another CA'; "
      "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj '/CN=localhost'; "
      "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' > server.ext; "
      "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem "
      "  -days 2 -extfile server.ext; "
      "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out other.key";
  if (std::system(("(" + cmd + ") >'" + dir + "/openssl.log' 2>&1").c_str()) != 0)
    c.error = "openssl failed making the test certificates (see " + dir + "/openssl.log)";
  return c;
}

}  // namespace polis::test
