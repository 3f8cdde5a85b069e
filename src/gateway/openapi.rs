//! `/openapi.json`, generated from the route table so that every route is described.

use crate::gateway::routes::ROUTES;
use serde_json::{json, Map, Value};

pub fn document() -> Value {
    let mut paths = Map::new();
    for r in ROUTES {
        let entry = paths.entry(r.template.to_string()).or_insert_with(|| json!({}));
        let mut op = json!({
            "summary": r.summary,
            "operationId": format!("{}_{}", r.method.to_lowercase(), r.template.trim_matches('/').replace(['/', '.', '{', '}', '-'], "_")),
            "responses": {
                "default": { "description": "problem+json error", "content": { "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } } } }
            }
        });
        let mut params = Vec::new();
        for seg in r.template.split('/') {
            if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                params.push(json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }));
            }
        }
        if r.idempotent_key {
            params
                .push(json!({ "name": "Idempotency-Key", "in": "header", "required": true, "schema": { "type": "string", "minLength": 1, "maxLength": 128 } }));
        }
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        if r.auth() {
            op["security"] = json!([{ "bearer": [] }]);
            op["x-roles"] = json!(r.roles.iter().map(|role| role.as_str()).collect::<Vec<_>>());
        }
        if r.method == "POST" || r.method == "PUT" {
            op["requestBody"] = json!({ "required": true, "content": { "application/json": { "schema": { "type": "object" } } } });
        }
        op["responses"]["2XX"] = json!({ "description": "success" });
        entry[r.method.to_lowercase()] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "Moneta API", "version": "1" },
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" } },
            "schemas": {
                "Problem": {
                    "type": "object",
                    "required": ["type", "title", "status", "detail", "code"],
                    "properties": {
                        "type": { "type": "string" }, "title": { "type": "string" }, "status": { "type": "integer" },
                        "detail": { "type": "string" }, "code": { "type": "string" }
                    }
                }
            }
        }
    })
}
