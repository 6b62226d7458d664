// fleetid keys list|create|show|pubkey|sign|delete: keys in the authority's token.
#include <fstream>
#include <iostream>
#include <memory>

#include "apps/cli/cli.h"
#include "crypto/crypto.h"
#include "crypto/keys.h"
#include "custody/custody.h"

namespace fleetid::cli {
namespace {

struct KeysFlags {
  std::string label;
  std::string suite_name = "ecdsa-p256-sha256";
  std::string in_path;
  std::string out_path;
};

Json KeyJson(const custody::KeyAttributes& k) {
  return Json{{"label", k.label},
              {"id", crypto::Hex(k.id)},
              {"suite", k.suite->name},
              {"held_in_hardware", k.HeldInHardware()},
              {"sensitive", k.sensitive},
              {"always_sensitive", k.always_sensitive},
              {"extractable", k.extractable},
              {"never_extractable", k.never_extractable},
              {"local", k.local},
              {"sign", k.can_sign},
              {"decrypt", k.can_decrypt},
              {"unwrap", k.can_unwrap},
              {"derive", k.can_derive}};
}

// OpenToken opens the token alone: no database, and no data directory made for it.
Result<custody::Token*> OpenToken(Context& context) {
  FLEETID_TRY(node, context.Open({.token = true}));
  return &node->token();
}

int List(Context& context) {
  auto token = OpenToken(context);
  if (!token) return Fail(token.error());
  auto all = (*token)->ListKeys();
  if (!all) return Fail(all.error());
  Json out = Json::array();
  for (const auto& k : *all) out.push_back(KeyJson(k));
  PrintJson(out);
  return 0;
}

int Create(Context& context, const KeysFlags& flags) {
  auto token = OpenToken(context);
  if (!token) return Fail(token.error());
  auto suite = crypto::FindSuite(flags.suite_name);
  if (!suite) return Fail(suite.error());
  auto made = (*token)->GenerateKey(flags.label, **suite, crypto::OpenSslRng::Instance());
  if (!made) return Fail(made.error());
  PrintJson(KeyJson(*made));
  return 0;
}

// Show prints the key's attributes with its public key, or (|pem_only|) the public key alone.
int Show(Context& context, const KeysFlags& flags, bool pem_only) {
  auto token = OpenToken(context);
  if (!token) return Fail(token.error());
  auto attrs = (*token)->FindKey(flags.label);
  if (!attrs) return Fail(attrs.error());
  auto pub = (*token)->PublicKey(flags.label);
  if (!pub) return Fail(pub.error());
  auto pem = crypto::PublicKeyPem(pub->get());
  if (!pem) return Fail(pem.error());
  if (pem_only) {
    std::cout << *pem;
    return 0;
  }
  Json out = KeyJson(*attrs);
  out["public_key_pem"] = *pem;
  PrintJson(out);
  return 0;
}

int Sign(Context& context, const KeysFlags& flags) {
  auto token = OpenToken(context);
  if (!token) return Fail(token.error());
  auto signer = (*token)->GetSigner(flags.label);
  if (!signer) return Fail(signer.error());
  auto data = ReadAll(flags.in_path);
  if (!data) return Fail(data.error());
  auto sig = (*signer)->Sign(crypto::AsBytes(*data));
  if (!sig) return Fail(sig.error());
  std::ofstream out(flags.out_path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(sig->data()), static_cast<std::streamsize>(sig->size()));
  if (!out.flush()) return Fail(Error(ErrorCode::kUnavailable, "cannot write " + flags.out_path));
  return 0;
}

int Delete(Context& context, const KeysFlags& flags) {
  auto token = OpenToken(context);
  if (!token) return Fail(token.error());
  if (auto r = (*token)->DestroyKey(flags.label); !r) return Fail(r.error());
  return 0;
}

}  // namespace

void AddKeysCommands(CLI::App& app, Context& context) {
  auto flags = std::make_shared<KeysFlags>();
  auto* keys = app.add_subcommand("keys", "keys in the authority's token")->require_subcommand(1);
  auto* list = keys->add_subcommand("list", "list the private keys on the token");
  context.OnParsed(list, [&context] { return List(context); });
  auto* create = keys->add_subcommand("create", "generate a key pair inside the token");
  create->add_option("label", flags->label, "key label")->required();
  create->add_option("--suite", flags->suite_name, "algorithm suite (see 'fleetid suites')");
  context.OnParsed(create, [&context, flags] { return Create(context, *flags); });
  auto* show = keys->add_subcommand("show", "show a key's attributes and public key");
  show->add_option("label", flags->label, "key label")->required();
  context.OnParsed(show, [&context, flags] { return Show(context, *flags, false); });
  auto* pubkey = keys->add_subcommand("pubkey", "print a key's public key (PEM)");
  pubkey->add_option("label", flags->label, "key label")->required();
  context.OnParsed(pubkey, [&context, flags] { return Show(context, *flags, true); });
  auto* sign = keys->add_subcommand("sign", "sign a file with a key in the token");
  sign->add_option("label", flags->label, "key label")->required();
  sign->add_option("--in", flags->in_path, "file to sign")->required();
  sign->add_option("--out", flags->out_path, "where to write the signature")->required();
  context.OnParsed(sign, [&context, flags] { return Sign(context, *flags); });
  auto* remove = keys->add_subcommand("delete", "destroy a key pair in the token");
  remove->add_option("label", flags->label, "key label")->required();
  context.OnParsed(remove, [&context, flags] { return Delete(context, *flags); });
}

}  // namespace fleetid::cli
