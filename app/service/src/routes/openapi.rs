//! `GET /openapi.json`: an OpenAPI 3 description of every API route, written by hand. A test compares its paths
//! and methods with the route table, so a route cannot be added or removed without updating it.

use std::sync::OnceLock;

use axum::Json;
use serde_json::{json, Value};

/// `GET /openapi.json`.
pub async fn openapi() -> Json<Value> {
    Json(document().clone())
}

/// The document (built once).
pub fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(build)
}

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

/// The 503 of a write route: the error body with `outcome`; `note` adds what is particular to the route.
fn write_unavailable(note: &str) -> Value {
    json!({
        "description": format!("{note}The write could not be completed. `outcome` says whether it took effect: \
            `not_applied` \
            (nothing was written, and nothing will be: safe to retry) or `unknown` (it may have been written, now or \
            a moment later; read the key or write it again). Messages: `database unavailable` (not_applied), \
            `too many writes of this key in flight` and `too many writes in flight` (not_applied), \
            `database did not confirm the write` (unknown), \
            `written, but reads may return the previous value for a while` (unknown)."),
        "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/WriteError"},
            "example": {"status": "error", "message": "database unavailable", "outcome": "not_applied"}
        }}
    })
}

fn text_response(description: &str, example: &str) -> Value {
    json!({"description": description, "content": {"text/plain": {"schema": {"type": "string"}, "example": example}}})
}

fn key_param() -> Value {
    json!({
        "name": "key", "in": "path", "required": true,
        "description": "The key: 1 to APP_MAX_KEY_BYTES (default 256) bytes of UTF-8, no NUL; percent-encode reserved characters.",
        "schema": {"type": "string", "minLength": 1}
    })
}

fn build() -> Value {
    let injected = "Injected fault (drills only, see the admin listener's /fault)";
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "app",
            "version": crate::VERSION,
            "description": "Key-value service on Postgres with a Redis read-through cache. Every error is JSON \
                {\"status\":\"error\",\"message\":\"…\"}, except the 404 of /get_key/{key}, which is text; the 503 \
                of a write route adds \"outcome\": \"not_applied\" or \"unknown\". Any other error of /set or \
                /set_key means nothing was written. \
                Unknown paths answer 404, other methods on a known path 405, bodies over APP_MAX_BODY_BYTES \
                (default 64 KiB) 413, keys over APP_MAX_KEY_BYTES (default 256 bytes) 400, path or query parameters \
                that are not UTF-8 once percent-decoded 400. HEAD is answered for every GET route, without side \
                effects (HEAD / and HEAD /set_key/{key}/{value} store nothing). While Postgres is unreachable every route \
                that needs it answers 503 within a second, except reads of keys that Redis holds. Every response \
                carries X-Content-Type-Options: nosniff."
        },
        "paths": {
            "/": {"get": {
                "summary": "HTML home page: stores Hello = World! and reads it back (HEAD: the same page, nothing stored)",
                "operationId": "home",
                "responses": {
                    "200": {"description": "HTML page", "content": {"text/html": {"schema": {"type": "string"}}}},
                    "500": error_response(injected),
                    "503": write_unavailable("Without `outcome`, the write succeeded and the read after it failed. ")
                }
            }},
            "/helloworld": {"get": {
                "summary": "Hello world; touches no dependency",
                "operationId": "helloWorld",
                "responses": {
                    "200": {"description": "Greeting", "content": {"application/json": {
                        "schema": {"type": "object", "required": ["msg"], "properties": {"msg": {"type": "string"}}},
                        "example": {"msg": "Hello World"}
                    }}},
                    "500": error_response(injected)
                }
            }},
            "/healthcheck": {"get": {
                "summary": "Liveness; touches no dependency and is never subject to fault injection",
                "operationId": "healthcheck",
                "responses": {"200": text_response("Alive", "OK")}
            }},
            "/status": {"get": {
                "summary": "Readiness: checks Postgres and Redis for real; never subject to fault injection",
                "operationId": "status",
                "responses": {
                    "200": {"description": "Up, or Degraded when only Redis is down",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Status"}}}},
                    "503": {"description": "Down: Postgres is unreachable",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Status"}}}}
                }
            }},
            "/set_key/{key}/{value}": {"get": {
                "summary": "Stores value (as a JSON string) under key (HEAD: validates, stores nothing)",
                "operationId": "setKey",
                "parameters": [key_param(), {
                    "name": "value", "in": "path", "required": true,
                    "description": "The value, stored as a JSON string (at most APP_MAX_BODY_BYTES bytes)",
                    "schema": {"type": "string"}
                }],
                "responses": {
                    "200": {"description": "`key is set to value`, HTML-escaped",
                        "content": {"text/html": {"schema": {"type": "string"}, "example": "foo is set to bar"}}},
                    "400": error_response("Invalid key, or key or value not UTF-8 once percent-decoded"),
                    "413": error_response("Value too large"),
                    "500": error_response(injected),
                    "503": write_unavailable("")
                }
            }},
            "/get_key/{key}": {"get": {
                "summary": "Reads a value as plain text (strings as is, other JSON values serialised)",
                "operationId": "getKey",
                "parameters": [key_param()],
                "responses": {
                    "200": text_response("The value", "bar"),
                    "400": error_response("Invalid key"),
                    "404": text_response("No such key", "Key not found"),
                    "500": error_response(injected),
                    "503": error_response("Postgres unavailable and the key not cached")
                }
            }},
            "/set": {"post": {
                "summary": "Stores any JSON value under a key, exactly: numbers keep every digit (in the plain decimal form \
                    Postgres stores: 1E+2 is stored as 100, 1.50 as 1.50); a member name repeated in one object is refused",
                "operationId": "set",
                "requestBody": {"required": true, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/SetRequest"},
                    "example": {"key": "foo", "value": {"any": ["JSON", 1, true]}}
                }}},
                "responses": {
                    "200": {"description": "Stored (committed to Postgres)", "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/Success"},
                        "example": {"status": "success", "message": "Key-value pair is set successfully"}
                    }}},
                    "400": error_response("Malformed JSON (invalid UTF-8 included), a member name repeated in one object, \
                        `Invalid key pair` (key missing, null or not a string; value missing or null), a key too long, or \
                        a value Postgres cannot store (a \\u0000 in a string; a number with more than 131072 digits \
                        before the decimal point or 16383 after it)"),
                    "413": error_response("Body larger than APP_MAX_BODY_BYTES, also once its numbers are written out in full"),
                    "415": error_response("Content type is not application/json"),
                    "500": error_response(injected),
                    "503": write_unavailable("")
                }
            }},
            "/get/{key}": {"get": {
                "summary": "Reads a value as stored",
                "operationId": "get",
                "parameters": [key_param()],
                "responses": {
                    "200": {"description": "The key and its value", "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/KeyValue"},
                        "example": {"key": "foo", "value": "bar"}
                    }}},
                    "400": error_response("Invalid key"),
                    "404": error_response("Key not found"),
                    "500": error_response(injected),
                    "503": error_response("Postgres unavailable and the key not cached")
                }
            }},
            "/query": {"get": {
                "summary": "Counts the distinct characters (Unicode scalar values, case-sensitive) that occur more than once",
                "operationId": "query",
                "parameters": [{"name": "param", "in": "query", "required": true, "schema": {"type": "string"}}],
                "responses": {
                    "200": {"description": "The parameter and the count", "content": {"application/json": {
                        "schema": {"type": "object", "required": ["param", "count"], "properties": {
                            "param": {"type": "string"}, "count": {"type": "integer", "minimum": 0}}},
                        "example": {"param": "acx333x", "count": 2}
                    }}},
                    "400": error_response("Missing or repeated param, or a query string that is not UTF-8 once percent-decoded"),
                    "500": error_response(injected)
                }
            }},
            "/openapi.json": {"get": {
                "summary": "This document",
                "operationId": "openapi",
                "responses": {
                    "200": {"description": "OpenAPI 3 document", "content": {"application/json": {"schema": {"type": "object"}}}},
                    "500": error_response(injected)
                }
            }}
        },
        "components": {"schemas": {
            "Error": {"type": "object", "required": ["status", "message"], "properties": {
                "status": {"type": "string", "enum": ["error"]}, "message": {"type": "string"}}},
            "WriteError": {"type": "object", "required": ["status", "message", "outcome"], "properties": {
                "status": {"type": "string", "enum": ["error"]}, "message": {"type": "string"},
                "outcome": {"type": "string", "enum": ["not_applied", "unknown"],
                    "description": "not_applied: not written and never will be. unknown: may be written."}}},
            "Success": {"type": "object", "required": ["status", "message"], "properties": {
                "status": {"type": "string", "enum": ["success"]}, "message": {"type": "string"}}},
            "SetRequest": {"type": "object", "required": ["key", "value"], "properties": {
                "key": {"type": "string", "minLength": 1, "description": "At most APP_MAX_KEY_BYTES bytes"},
                "value": {
                    "description": "Any JSON value except null (null inside an array or object is a value like any \
                        other); numbers are stored exactly",
                    "nullable": false,
                    "anyOf": [
                        {"type": "string"}, {"type": "number"}, {"type": "boolean"},
                        {"type": "array", "items": {}}, {"type": "object"}
                    ]
                }}},
            "KeyValue": {"type": "object", "required": ["key", "value"], "properties": {
                "key": {"type": "string"}, "value": {"description": "The value as stored, any JSON but null; numbers \
                    in plain decimal form with every digit sent"}}},
            "Check": {"type": "object", "required": ["status", "latency_ms"], "properties": {
                "status": {"type": "string", "enum": ["ok", "error"]},
                "latency_ms": {"type": "number"},
                "error": {"type": "string", "description": "Kind of failure; never an address or credential"}}},
            "Status": {"type": "object", "required": ["status", "version", "revision", "uptime_seconds", "checks"], "properties": {
                "status": {"type": "string", "enum": ["Up", "Degraded", "Down"]},
                "version": {"type": "string"},
                "revision": {"type": "string"},
                "uptime_seconds": {"type": "integer"},
                "checks": {"type": "object", "required": ["postgres", "redis"], "properties": {
                    "postgres": {"$ref": "#/components/schemas/Check"},
                    "redis": {"$ref": "#/components/schemas/Check"}}}}}
        }}
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::routes::route_table;

    #[test]
    fn the_document_describes_exactly_the_routes_of_the_router() {
        let documented: BTreeSet<(String, String)> = document()["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .unwrap()
                    .keys()
                    .map(move |m| (m.to_uppercase(), path.clone()))
            })
            .collect();
        let routed: BTreeSet<(String, String)> = route_table()
            .iter()
            .map(|r| (r.method.to_string(), r.path.to_owned()))
            .collect();
        assert_eq!(documented, routed);
    }

    #[test]
    fn a_set_request_value_may_not_be_null() {
        let value = &document()["components"]["schemas"]["SetRequest"]["properties"]["value"];
        assert_eq!(value["nullable"], false);
        let types: Vec<&str> = value["anyOf"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["type"].as_str().unwrap())
            .collect();
        assert!(!types.contains(&"null") && types.len() == 5, "{types:?}");
    }

    #[test]
    fn every_write_route_documents_the_outcome_of_its_503() {
        for (path, method) in [("/", "get"), ("/set_key/{key}/{value}", "get"), ("/set", "post")] {
            let reference =
                &document()["paths"][path][method]["responses"]["503"]["content"]["application/json"]["schema"]["$ref"];
            assert_eq!(reference, "#/components/schemas/WriteError", "{method} {path}");
        }
    }

    #[test]
    fn every_reference_resolves() {
        let text = document().to_string();
        let schemas = document()["components"]["schemas"].as_object().unwrap();
        for reference in text.split("\"#/components/schemas/").skip(1) {
            let name = &reference[..reference.find('"').unwrap()];
            assert!(schemas.contains_key(name), "dangling $ref to {name}");
        }
    }
}
