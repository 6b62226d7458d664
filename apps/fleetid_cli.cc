// fleetid: the operator's command line.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "apps/options.h"
#include "crypto/crypto.h"
#include "crypto/keys.h"
#include "custody/store.h"

namespace fleetid {
namespace {

using Json = nlohmann::json;

int Fail(const Error& error) {
  std::cerr << "fleetid: " << error.ToString() << "\n";
  return 1;
}

Result<std::shared_ptr<custody::Token>> OpenToken(const apps::CommonFlags& flags) {
  FLEETID_TRY(config, apps::ResolveConfig(flags));
  FLEETID_TRY(opened,
              custody::OpenCustody(config.custody, config.data_dir, crypto::OpenSslRng::Instance()));
  return opened.token;
}

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

Result<std::string> ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return MakeError(ErrorCode::kNotFound, "cannot read '{}'", path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

int Run(int argc, char** argv) {
  CLI::App app{"fleetid: operate a fleetid device identity authority"};
  app.require_subcommand(1);
  apps::CommonFlags flags;
  apps::AddCommonFlags(app, flags);

  auto* suites = app.add_subcommand("suites", "list the algorithm suites fleetid supports");

  auto* keys = app.add_subcommand("keys", "keys in the authority's token")->require_subcommand(1);
  auto* list = keys->add_subcommand("list", "list the private keys on the token");
  std::string label;
  std::string suite_name = "ecdsa-p256-sha256";
  std::string in_path;
  std::string out_path;
  auto* create = keys->add_subcommand("create", "generate a key pair inside the token");
  create->add_option("label", label, "key label")->required();
  create->add_option("--suite", suite_name, "algorithm suite (see 'fleetid suites')");
  auto* show = keys->add_subcommand("show", "show a key's attributes and public key");
  show->add_option("label", label, "key label")->required();
  auto* pubkey = keys->add_subcommand("pubkey", "print a key's public key (PEM)");
  pubkey->add_option("label", label, "key label")->required();
  auto* sign = keys->add_subcommand("sign", "sign a file with a key in the token");
  sign->add_option("label", label, "key label")->required();
  sign->add_option("--in", in_path, "file to sign")->required();
  sign->add_option("--out", out_path, "where to write the signature")->required();
  auto* remove = keys->add_subcommand("delete", "destroy a key pair in the token");
  remove->add_option("label", label, "key label")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  if (suites->parsed()) {
    for (const crypto::Suite& s : crypto::AllSuites()) std::cout << s.name << "\n";
    return 0;
  }

  auto token = OpenToken(flags);
  if (!token) return Fail(token.error());

  if (list->parsed()) {
    auto all = (*token)->ListKeys();
    if (!all) return Fail(all.error());
    Json out = Json::array();
    for (const auto& k : *all) out.push_back(KeyJson(k));
    std::cout << out.dump(2) << "\n";
  } else if (create->parsed()) {
    auto suite = crypto::FindSuite(suite_name);
    if (!suite) return Fail(suite.error());
    auto made = (*token)->GenerateKey(label, **suite, crypto::OpenSslRng::Instance());
    if (!made) return Fail(made.error());
    std::cout << KeyJson(*made).dump(2) << "\n";
  } else if (show->parsed() || pubkey->parsed()) {
    auto attrs = (*token)->FindKey(label);
    if (!attrs) return Fail(attrs.error());
    auto pub = (*token)->PublicKey(label);
    if (!pub) return Fail(pub.error());
    auto pem = crypto::PublicKeyPem(pub->get());
    if (!pem) return Fail(pem.error());
    if (pubkey->parsed()) {
      std::cout << *pem;
    } else {
      Json out = KeyJson(*attrs);
      out["public_key_pem"] = *pem;
      std::cout << out.dump(2) << "\n";
    }
  } else if (sign->parsed()) {
    auto signer = (*token)->GetSigner(label);
    if (!signer) return Fail(signer.error());
    auto data = ReadAll(in_path);
    if (!data) return Fail(data.error());
    auto sig = (*signer)->Sign(crypto::AsBytes(*data));
    if (!sig) return Fail(sig.error());
    std::ofstream out(out_path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(sig->data()), static_cast<std::streamsize>(sig->size()));
    if (!out.flush()) return Fail(Error(ErrorCode::kUnavailable, "cannot write " + out_path));
  } else if (remove->parsed()) {
    if (auto r = (*token)->DestroyKey(label); !r) return Fail(r.error());
  }
  return 0;
}

}  // namespace
}  // namespace fleetid

int main(int argc, char** argv) {
  try {
    return fleetid::Run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "fleetid: unexpected exception: " << e.what() << "\n";
    return 70;
  }
}
