// The coserve server: the built-in services on the core runtime.
#include "coserve/runtime.hpp"
#include "coserve/server.hpp"
#include "auth/auth.hpp"
#include "chat/chat.hpp"
#include "command/command.hpp"
#include "echo/echo.hpp"
#include "files/files.hpp"
#include "web/web_service.hpp"

int main(int argc, char** argv) {
  coserve::tune_malloc_for_frames();
  if (argc > 1 && std::string_view(argv[1]) == "user")
    return coserve::auth::user_command(argc - 1, argv + 1);  // coserve user add|passwd|del|list
  coserve::Registry services;
  services.add<coserve::auth::AuthService>();  // first: other services look it up
  services.add<coserve::echo::EchoService>();
  services.add<coserve::chat::ChatService>();
  services.add<coserve::command::CommandService>();
  services.add<coserve::files::FilesService>();
  services.add<coserve::web::WebService>();
  return coserve::run_main(argc, argv, std::move(services));
}
