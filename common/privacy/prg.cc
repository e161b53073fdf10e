#include "common/privacy/prg.h"

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <cstring>
#include <memory>
#include <string>

namespace polis::privacy {

void ChaCha20Keystream(const Key256& key, uint64_t nonce_lo, uint32_t nonce_hi,
                       uint64_t byte_offset, uint8_t* out, size_t n) {
  if (n == 0) return;
  const uint64_t block = byte_offset / 64;
  POLIS_ENFORCE((block + (n + 63) / 64) <= (uint64_t{1} << 32));
  // EVP_chacha20's IV: a 32-bit little-endian block counter, then the nonce.
  uint8_t iv[16];
  for (int b = 0; b < 4; ++b) iv[b] = static_cast<uint8_t>(block >> (8 * b));
  for (int b = 0; b < 8; ++b) iv[4 + b] = static_cast<uint8_t>(nonce_lo >> (8 * b));
  for (int b = 0; b < 4; ++b) iv[12 + b] = static_cast<uint8_t>(nonce_hi >> (8 * b));
  std::unique_ptr<EVP_CIPHER_CTX, decltype(&EVP_CIPHER_CTX_free)> ctx(EVP_CIPHER_CTX_new(),
                                                                      &EVP_CIPHER_CTX_free);
  POLIS_ENFORCE(ctx != nullptr);
  POLIS_ENFORCE(EVP_EncryptInit_ex(ctx.get(), EVP_chacha20(), nullptr, key.data(), iv) == 1);
  // Encrypting zeros yields the keystream; skip into the first block.
  static const uint8_t kZeros[4096] = {};
  uint8_t skip[64];
  int len = 0;
  const int lead = static_cast<int>(byte_offset % 64);
  if (lead) POLIS_ENFORCE(EVP_EncryptUpdate(ctx.get(), skip, &len, kZeros, lead) == 1);
  while (n > 0) {
    const int chunk = static_cast<int>(std::min<size_t>(n, sizeof(kZeros)));
    POLIS_ENFORCE(EVP_EncryptUpdate(ctx.get(), out, &len, kZeros, chunk) == 1 && len == chunk);
    out += chunk;
    n -= chunk;
  }
}

Key256 KeyFromNumber(const char* what, uint64_t value) {
  std::string msg(what);
  for (int b = 0; b < 8; ++b) msg.push_back(static_cast<char>(value >> (8 * b)));
  Key256 k;
  unsigned len = 0;
  POLIS_ENFORCE(EVP_Digest(msg.data(), msg.size(), k.data(), &len, EVP_sha256(), nullptr) == 1);
  return k;
}

StatusOr<Key256> RandomKey() {
  Key256 k;
  if (RAND_bytes(k.data(), static_cast<int>(k.size())) != 1)
    return InternalError("OpenSSL RAND_bytes failed to give 32 random bytes");
  return k;
}

}  // namespace polis::privacy
