// The registry's view of the ops-plane HTTP pieces in common/http: the
// server (http_server.h) and the blocking client (http_client.h).
#pragma once

#include "common/http/http_client.h"
#include "common/http/http_server.h"

namespace polis::registry {

using http::HttpHandler;
using http::HttpRequest;
using http::HttpResponse;
using http::HttpServer;
using http::HttpServerOptions;
using http::Post;
using http::Respond;
using http::HttpClient;
using http::HttpResult;
using http::ParseHostPort;

}  // namespace polis::registry
