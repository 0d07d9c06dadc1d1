// The coserve server: the built-in services on the core runtime.
#include <cstdlib>
#include <cstring>
#include <string>

#include "coserve/runtime.hpp"
#include "coserve/server.hpp"
#include "auth/auth.hpp"
#include "chat/chat.hpp"
#include "command/command.hpp"
#include "echo/echo.hpp"
#include "files/files.hpp"
#include "web/web_service.hpp"

extern char** environ;

namespace {

// /proc/<pid>/environ shows the block the process was started with, whatever setenv/unsetenv
// do later: a secret passed in the environment is overwritten there before any thread starts.
// The value moves to the heap copy setenv makes, where the service that needs it reads it once
// and unsets it (auth: COSERVE_ADMIN_PASSWORD).
void hide_env_secret(const char* name) {
  const std::size_t name_len = std::strlen(name);
  for (char** entry = environ; *entry; ++entry) {
    if (std::strncmp(*entry, name, name_len) != 0 || (*entry)[name_len] != '=') continue;
    char* value = *entry + name_len + 1;
    std::string copy(value);
    std::memset(value, 0, copy.size());
    ::setenv(name, copy.c_str(), 1);
    std::memset(copy.data(), 0, copy.size());
    return;
  }
}

}  // namespace

int main(int argc, char** argv) {
  hide_env_secret("COSERVE_ADMIN_PASSWORD");
  coserve::tune_malloc_for_frames();
  if (argc > 1 && std::string_view(argv[1]) == "user")
    return coserve::auth::user_command(argc - 1, argv + 1);  // coserve user add|passwd|del|list
  coserve::Registry services;
  services.add<coserve::auth::AuthService>();
  services.add<coserve::echo::EchoService>();
  services.add<coserve::chat::ChatService>();
  services.add<coserve::command::CommandService>();
  services.add<coserve::files::FilesService>();
  services.add<coserve::web::WebService>();
  return coserve::run_main(argc, argv, std::move(services));
}
