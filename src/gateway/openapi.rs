//! `/openapi.json`, generated from the route table so that every route is described.

use crate::gateway::routes::ROUTES;
use serde_json::{json, Map, Value};

pub fn document() -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
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
        for (name, description, schema) in r.query {
            let schema: Value = serde_json::from_str(schema).expect("a route's query schema is JSON");
            params.push(json!({ "name": name, "in": "query", "required": false, "description": description, "schema": schema }));
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
        if let Some(body) = r.body {
            let (name, schema) = body();
            op["requestBody"] =
                json!({ "required": true, "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{name}") } } } });
            schemas.insert(name, serde_json::to_value(schema).unwrap_or(Value::Null));
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
            "schemas": problem_and(schemas),
        }
    })
}

fn problem_and(mut schemas: Map<String, Value>) -> Value {
    schemas.insert(
        "Problem".into(),
        json!({
            "type": "object",
            "required": ["type", "title", "status", "detail", "code"],
            "properties": {
                "type": { "type": "string" }, "title": { "type": "string" }, "status": { "type": "integer" },
                "detail": { "type": "string" }, "code": { "type": "string" }
            }
        }),
    );
    Value::Object(schemas)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_described_with_its_body_schema() {
        let doc = document();
        for r in ROUTES {
            let op = &doc["paths"][r.template][r.method.to_lowercase()];
            assert!(op.is_object(), "{} {} missing", r.method, r.template);
            if r.body.is_some() {
                let reference = op["requestBody"]["content"]["application/json"]["schema"]["$ref"].as_str().unwrap();
                let name = reference.rsplit('/').next().unwrap();
                assert!(doc["components"]["schemas"][name].is_object(), "{reference} does not resolve");
            }
        }
        let register = &doc["components"]["schemas"]["RegisterBody"];
        let required: Vec<&str> = register["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        for field in ["email", "password", "full_name", "date_of_birth", "country"] {
            assert!(required.contains(&field), "{field} not required: {register}");
        }
        assert_eq!(register["additionalProperties"], json!(false), "unknown fields are refused: {register}");
        // Every body-taking route (other than those documented as bodiless) has a schema.
        for r in ROUTES.iter().filter(|r| r.method == "POST" || r.method == "PUT") {
            let bodiless = [
                "/v1/auth/logout",
                "/v1/me/mfa/totp",
                "/v1/compliance/sanctions/reload",
                "/v1/advice/{advice_id}/accept",
                "/v1/cluster/nodes/{node_id}/decommission",
            ];
            assert!(
                r.body.is_some() || bodiless.contains(&r.template),
                "{} {} has no body schema",
                r.method,
                r.template
            );
        }
    }
}
